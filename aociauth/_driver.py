"""What every adapter of the core does the same way, whatever its HTTP client.

The aiohttp middleware and the httpx ``Auth`` both look credentials up once
per (origin, namespace) and remember the answer, asking again when the core
renews refused credentials or the config's files changed (:class:`Credentials`), run
the core's fetch flow performing its token calls (:func:`run_fetch`), and
retry a token call that met 429, 5xx or no answer (:func:`retrying_token_call`).
Only one attempt at a token call is the client's own. Concurrency is anyio's,
so this runs under asyncio and trio alike.
"""

from __future__ import annotations

import logging
import math
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
from yarl import URL

from aociauth._redact import redact_text, redact_url
from aociauth._singleflight import SingleFlight
from aociauth.config import ConfigEntry, ConfigFile
from aociauth.core import AuthCore, FetchJob, Found, LookupCredentials, TokenCall, TokenReply
from aociauth.core.rules import backoff, is_retryable
from aociauth.errors import CredentialLookupError, OCIAuthError, TokenServerError
from aociauth.stats import AuthStats
from aociauth.tokens import AccessToken

if TYPE_CHECKING:
    from aociauth.config import Config
    from aociauth.params import StdTransportParams

__all__ = ["Attempt", "Credentials", "EntryKey", "retrying_token_call", "run_fetch"]

log = logging.getLogger("aociauth")

EntryKey = tuple[URL, str]

#: One attempt at a token call: given the call, its headers and how to name the server
#: in messages, the reply and the server's Retry-After in seconds (None if it gave none).
Attempt = Callable[[TokenCall, dict[str, str], str], Awaitable[tuple[TokenReply, float | None]]]


class Credentials:
    """The config's entry per (origin, namespace): looked up once, shared, and remembered.

    Failures are remembered too (as the original does): a registry whose
    helper failed is not asked again by this adapter, until the core renews
    its credentials (a :class:`LookupCredentials` with a ``renewal`` number:
    one lookup per number, whoever asks) or the config's files change.
    ``max_entries`` bounds what is kept, least recently used out.

    :meth:`watch` checks a :class:`ConfigFile`'s files at most once per
    ``check_interval`` seconds (and every lookup checks them first); when
    they changed, every remembered answer is dropped and ``on_change`` is
    called (the core's :meth:`~aociauth.core.AuthCore.forget_credentials`).
    """

    def __init__(
        self,
        config: Config | None,
        stats: AuthStats,
        lookups: SingleFlight[EntryKey, Found],
        max_entries: int,
        *,
        check_interval: float = 1.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._stats = stats
        self._lookups = lookups
        self._max = max_entries
        self._entries: OrderedDict[EntryKey, Found | OCIAuthError] = OrderedDict()
        #: The renewal number each key was last asked again for.
        self._renewals: dict[EntryKey, int] = {}
        self._check_interval = check_interval
        self._on_change = on_change
        self._next_check = -math.inf

    def watch(self, now: float) -> None:
        """Check the config's files for changes if ``check_interval`` has passed since
        the last check (``now``: the adapter's monotonic clock)."""
        if now < self._next_check:
            return
        self._next_check = now + self._check_interval
        self._reload()

    def _reload(self) -> None:
        if isinstance(self._config, ConfigFile) and self._config.reload_if_changed():
            self._entries.clear()
            self._renewals.clear()
            if self._on_change is not None:
                self._on_change()

    async def entry(self, effect: LookupCredentials) -> Found:
        """The config's entry for (origin, namespace), looked up once and remembered
        (again, once, for each new ``renewal`` number)."""
        key = (effect.origin, effect.namespace)
        if effect.renewal and self._renewals.get(key) != effect.renewal:
            # The remembered answer was refused: the first request naming this
            # renewal drops it; the others join its lookup or read its answer.
            self._renewals[key] = effect.renewal
            while len(self._renewals) > self._max:
                del self._renewals[next(iter(self._renewals))]
            self._entries.pop(key, None)
        known = self._entries.get(key)
        if known is None:
            return await self._lookups.run(key, lambda: self._lookup(effect))
        self._entries.move_to_end(key)
        if isinstance(known, OCIAuthError):
            raise known
        return known

    async def _lookup(self, effect: LookupCredentials) -> Found:
        key = (effect.origin, effect.namespace)
        try:
            entry = Found(ConfigEntry()) if effect.downgraded else await self._ask_config(effect)
        except Exception as exc:
            # A user's Config may raise anything; the caller gets one clear error type.
            # Our own errors carry no secret; a foreign message is scrubbed first.
            why = str(exc) if isinstance(exc, OCIAuthError) else redact_text(str(exc))
            failure = CredentialLookupError(
                f"cannot acquire auth info for registry {effect.host!r}: {why}",
                registry=effect.host,
                step="config",
            )
            failure.__cause__ = exc
            self._remember(key, failure)
            raise failure from exc
        self._remember(key, entry)
        return entry

    def _remember(self, key: EntryKey, value: Found | OCIAuthError) -> None:
        self._entries[key] = value
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def _ask_config(self, effect: LookupCredentials) -> Found:
        host, namespace = effect.host, effect.namespace
        if self._config is None:
            return Found(ConfigEntry())
        self._stats.config_lookups += 1
        if isinstance(self._config, ConfigFile):
            self._reload()  # a lookup reads what is on disk now
            # A ConfigFile says where the answer came from: tell the story, count helper runs.
            res = await self._config.resolve(host, namespace)
            self._stats.helper_runs += len(res.helpers_asked)
            log.debug(
                "credentials for %s%s: %s (key %r, %s, from %s)",
                host,
                f"/{namespace}" if namespace else "",
                res.entry,
                res.key,
                res.kind,
                res.helper or res.source,
            )
            # A helper's answer may expire: the core asks for it again when refused.
            return Found(res.entry, res.kind in ("credHelpers", "credsStore"))
        if namespace:
            by_repo = getattr(self._config, "entry_for_repository", None)
            if by_repo is not None:
                entry: ConfigEntry = await by_repo(host, namespace)
                return Found(entry)
        return Found(await self._config.entry_for_registry(host))


async def run_fetch(
    core: AuthCore,
    job: FetchJob,
    token_call: Callable[[TokenCall], Awaitable[TokenReply]],
    clock: Callable[[], float] = anyio.current_time,
) -> AccessToken | OCIAuthError:
    """Run the core's fetch flow for ``job``, performing its token calls with ``token_call``.

    ``clock`` is the adapter's monotonic clock (anyio's by default; on asyncio,
    the loop's own ``time()``, which an asyncio-only adapter may pass directly).
    """
    flow = core.fetch_flow(job)
    value: TokenReply | None = None
    try:
        while True:
            try:
                call = core.resume(flow, value, clock())
            except StopIteration as stop:
                result: AccessToken | OCIAuthError = stop.value
                return result
            value = await token_call(call)
    finally:
        flow.close()


async def retrying_token_call(
    call: TokenCall, params: StdTransportParams, stats: AuthStats, attempt: Attempt
) -> TokenReply:
    """One token-server exchange, retried with backoff (or the server's Retry-After) after
    429, 5xx or a connection error; every attempt counted in ``stats.token_requests``."""
    attempts = max(1, params.token_attempts)
    where = f"token server {call.url.host} for {call.registry}"
    headers: dict[str, str] = {"Accept": "application/json"}
    if call.authorization is not None:
        headers["Authorization"] = call.authorization
    reply = TokenReply(None)
    for n in range(attempts):
        stats.token_requests[call.kind] = stats.token_requests.get(call.kind, 0) + 1
        log.debug(
            "token request %d/%d for %s: %s %s (%s)",
            n + 1,
            attempts,
            call.registry,
            call.method,
            redact_url(call.url),
            call.kind,
        )
        reply, wait = await attempt(call, headers, where)
        unreachable = type(reply.error) is TokenServerError
        if reply.error is not None and not unreachable:
            return reply  # refused by policy, too big, or the adapter closed
        if not is_retryable(reply.status) or n + 1 >= attempts:
            return reply
        stats.token_server_retries += 1
        if wait is None:
            jitter = random.random()  # noqa: S311 (jitter, not a secret)
            wait = backoff(n, params.retry_backoff, params.retry_max_wait, jitter)
        log.debug("%s failed (%s); retry in %.2fs", where, reply.error or reply.status, wait)
        await anyio.sleep(wait)
    return reply
