"""What every adapter of the core does the same way, whatever its HTTP client.

The aiohttp middleware and the httpx ``Auth`` both look credentials up once
per (origin, namespace) and remember the answer (:class:`Credentials`), run
the core's fetch flow performing its token calls (:func:`run_fetch`), and
retry a token call that met 429, 5xx or no answer (:func:`retrying_token_call`).
Only one attempt at a token call is the client's own. Concurrency is anyio's,
so this runs under asyncio and trio alike. With ``params.shared_cache``, a
fetch first looks in the tier shared by a fleet of processes
(:class:`SharedTier`, :func:`fetch_token`).
"""

from __future__ import annotations

import hmac
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
from yarl import URL

from aociauth._redact import redact_text, redact_url
from aociauth._singleflight import SingleFlight
from aociauth.config import ConfigEntry, ConfigFile
from aociauth.core import AuthCore, FetchJob, LookupCredentials, TokenCall, TokenReply
from aociauth.core.rules import backoff, is_retryable
from aociauth.errors import CredentialLookupError, OCIAuthError, TokenServerError
from aociauth.shared_cache import SharedIdentity, SharedToken, SharedTokenStore, shared_fetch
from aociauth.stats import AuthStats
from aociauth.tokens import AccessToken

if TYPE_CHECKING:
    from aociauth.config import Config
    from aociauth.params import StdTransportParams

__all__ = [
    "Attempt",
    "Credentials",
    "EntryKey",
    "SharedTier",
    "fetch_token",
    "retrying_token_call",
    "run_fetch",
    "shared_identity",
    "shared_realm",
]

log = logging.getLogger("aociauth")

EntryKey = tuple[URL, str]

#: One attempt at a token call: given the call, its headers and how to name the server
#: in messages, the reply and the server's Retry-After in seconds (None if it gave none).
Attempt = Callable[[TokenCall, dict[str, str], str], Awaitable[tuple[TokenReply, float | None]]]


class Credentials:
    """The config's entry per (origin, namespace): looked up once, shared, and remembered.

    Failures are remembered too (as the original does): a registry whose
    helper failed is not asked again by this adapter. ``max_entries`` bounds
    what is kept, least recently used out.
    """

    def __init__(
        self,
        config: Config | None,
        stats: AuthStats,
        lookups: SingleFlight[EntryKey, ConfigEntry],
        max_entries: int,
    ) -> None:
        self._config = config
        self._stats = stats
        self._lookups = lookups
        self._max = max_entries
        self._entries: OrderedDict[EntryKey, ConfigEntry | OCIAuthError] = OrderedDict()

    async def entry(self, effect: LookupCredentials) -> ConfigEntry:
        """The config's entry for (origin, namespace), looked up once and remembered."""
        key = (effect.origin, effect.namespace)
        known = self._entries.get(key)
        if known is None:
            return await self._lookups.run(key, lambda: self._lookup(effect))
        self._entries.move_to_end(key)
        if isinstance(known, OCIAuthError):
            raise known
        return known

    async def _lookup(self, effect: LookupCredentials) -> ConfigEntry:
        key = (effect.origin, effect.namespace)
        try:
            entry = ConfigEntry() if effect.downgraded else await self._ask_config(effect)
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

    def _remember(self, key: EntryKey, value: ConfigEntry | OCIAuthError) -> None:
        self._entries[key] = value
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def _ask_config(self, effect: LookupCredentials) -> ConfigEntry:
        host, namespace = effect.host, effect.namespace
        if self._config is None:
            return ConfigEntry()
        self._stats.config_lookups += 1
        if isinstance(self._config, ConfigFile):
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
            return res.entry
        if namespace:
            by_repo = getattr(self._config, "entry_for_repository", None)
            if by_repo is not None:
                entry: ConfigEntry = await by_repo(host, namespace)
                return entry
        return await self._config.entry_for_registry(host)


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


async def fetch_token(
    core: AuthCore,
    job: FetchJob,
    token_call: Callable[[TokenCall], Awaitable[TokenReply]],
    shared: SharedTier | None,
    clock: Callable[[], float] = anyio.current_time,
) -> AccessToken | OCIAuthError:
    """The token of ``job``: from the shared tier when there is one and it has it (or
    fetched once for the whole fleet and shared), else by :func:`run_fetch`."""
    if shared is None:
        return await run_fetch(core, job, token_call, clock)
    return await shared.fetch(core, job, lambda: run_fetch(core, job, token_call, clock), clock)


def shared_identity(job: FetchJob, credentials: bool) -> SharedIdentity:
    """Whose token the fetch of ``job`` gets, as the shared tier files it.

    ``credentials``: the fetch sends the identity's credentials (else it asks
    anonymously, and its token is anybody's: filed under the anonymous identity
    of the registry, shared with anonymous identities only). The secret is the
    config's Basic credentials and refresh token: processes given the same
    credentials share, any difference in them shares nothing. A refresh token
    the token server rotated to is the same principal's, so it does not re-file.
    """
    host = job.origin.host
    ident = job.identity
    if not credentials:
        return SharedIdentity(host, "", "")
    return SharedIdentity(host, ident.username, f"{ident.basic}\n{ident.refresh_token}")


def shared_realm(job: FetchJob) -> str:
    """The token server of ``job`` as the shared tier names it: realm and service."""
    params = job.challenge.params
    realm, service = params.get("realm", ""), params.get("service", "")
    return f"{realm} {service}" if service else realm


class _FetchFailed(Exception):
    """The fetch inside the shared tier ended in an error value: no token to share."""


class _FetchRaised(Exception):
    """The fetch inside the shared tier raised: to be raised again, unchanged."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error


class SharedTier:
    """A :class:`~aociauth.shared_cache.SharedTokenStore` as both adapters use it.

    Asked only when the core's own cache missed and it wants a fetch: a token
    found there is adopted into the core's cache (the next request is a local
    hit that never waits on the store); else the fleet fetches it once
    (:func:`~aociauth.shared_cache.shared_fetch`) and it is written back for
    as long as it lives. A store that raises is skipped for that fetch, counted
    in ``stats.shared_errors`` and logged once until it answers again: the
    shared tier never fails a request.
    """

    def __init__(
        self, store: SharedTokenStore, stats: AuthStats, wall: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self._stats = stats
        #: Wall-clock epoch seconds: what processes on other machines share.
        self._wall = wall
        self._failing = False

    def _local(self, found: SharedToken, now: float) -> AccessToken:
        """``found`` on the core's monotonic clock (``now`` is it as of the wall clock's now)."""
        wall = self._wall()
        issued = now if found.issued_at is None else now - max(0.0, wall - found.issued_at)
        return AccessToken(found.value, found.scope, issued, now + (found.expires_at - wall))

    def _shared(self, tok: AccessToken, now: float) -> SharedToken:
        wall = self._wall()
        return SharedToken(
            tok.value, tok.scope, wall + (tok.expires_at - now), wall - (now - tok.issued_at)
        )

    async def fetch(
        self,
        core: AuthCore,
        job: FetchJob,
        fetch: Callable[[], Awaitable[AccessToken | OCIAuthError]],
        clock: Callable[[], float],
    ) -> AccessToken | OCIAuthError:
        """The token of ``job``: adopted from the store, or ``fetch`` (once for the fleet)."""
        credentials = core.fetch_uses_credentials(job)
        if credentials is None:
            return await fetch()  # no token request would be made: nothing to share
        policy = core.policy
        fraction = policy.refresh_fraction if policy.refresh_ahead else None
        replacing = job.replacing

        def accept(found: SharedToken) -> bool:
            # Never the token being replaced: after a 401 the fleet would hand back the
            # refused token forever. Nor one due for refresh: each request would refresh it.
            if replacing is not None and hmac.compare_digest(found.value, replacing.value):
                return False
            now = clock()
            return fraction is None or not self._local(found, now).refresh_due(now, fraction)

        done: list[AccessToken | OCIAuthError] = []

        async def fetch_and_share() -> SharedToken:
            try:
                got = await fetch()
            except Exception as exc:
                raise _FetchRaised(exc) from exc
            done.append(got)
            if isinstance(got, OCIAuthError):
                raise _FetchFailed
            return self._shared(got, clock())

        identity = shared_identity(job, credentials)
        try:
            found, fetched = await shared_fetch(
                self.store,
                identity,
                shared_realm(job),
                job.required,
                fetch_and_share,
                accept=accept,
            )
        except _FetchFailed:
            return done[0]
        except _FetchRaised as raised:
            raise raised.error from None
        except Exception as exc:
            # A store that breaks its promise not to raise: go on without it.
            self._failed(exc)
            return done[0] if done else await fetch()
        self._answered()
        if fetched:
            return done[0]
        now = core.now = clock()
        tok = core.adopt_token(job.identity, self._local(found, now))
        if tok is None:
            return await fetch()
        self._stats.shared_hits += 1
        log.debug("token for %s scope=%r from the shared cache", job.origin.host, str(tok.scope))
        return tok

    def _failed(self, exc: Exception) -> None:
        self._stats.shared_errors += 1
        if not self._failing:
            self._failing = True
            log.warning(
                "shared token cache %r failed (%s); going on without it",
                self.store,
                type(exc).__name__,
            )

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("shared token cache %r answers again", self.store)


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
