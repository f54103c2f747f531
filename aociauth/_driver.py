"""What every adapter of the core does the same way, whatever its HTTP client.

The aiohttp middleware and the httpx ``Auth`` both look credentials up once
per (origin, namespace) and remember the answer, asking again when the core
renews refused credentials or the config's files changed (:class:`Credentials`), run
the core's fetch flow performing its token calls (:func:`run_fetch`), and
retry a token call that met 429, 5xx or no answer (:func:`retrying_token_call`).
Only one attempt at a token call is the client's own. Concurrency is anyio's,
so this runs under asyncio and trio alike. With ``params.shared_cache``, a
fetch first looks in the tier shared by a fleet of processes
(:class:`SharedTier`, :func:`fetch_token`).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import TYPE_CHECKING

import anyio
from yarl import URL

from aociauth import _trace
from aociauth._redact import redact_text, redact_url
from aociauth._singleflight import SingleFlight
from aociauth.config import (
    _CONTROL,
    ConfigEntry,
    ConfigFile,
    NamespacedConfig,
    Resolution,
    _fields,
    _show,
)
from aociauth.core import (
    AuthCore,
    FetchJob,
    LookupAnswer,
    LookupCredentials,
    TokenCall,
    TokenReply,
)
from aociauth.core.rules import backoff, is_retryable
from aociauth.errors import ConfigError, CredentialLookupError, OCIAuthError, TokenServerError
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
    "FetchLocks",
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


class FetchLocks:
    """One lock per origin (``serialize_token_fetches``), kept only while in use.

    A lock is forgotten when the last fetch holding or waiting for it leaves: a
    registry redirecting to ever new hosts must not grow this table.
    """

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[anyio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        """Hold the lock of ``key`` for the body of the ``async with``."""
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (anyio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]


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
        lookups: SingleFlight[EntryKey, LookupAnswer],
        max_entries: int,
        *,
        check_interval: float = 1.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._stats = stats
        self._lookups = lookups
        self._max = max_entries
        self._entries: OrderedDict[EntryKey, LookupAnswer | OCIAuthError] = OrderedDict()
        #: The renewal number each key was last asked again for.
        self._renewals: dict[EntryKey, int] = {}
        self._check_interval = check_interval
        self._on_change = on_change
        #: When the config's files are next due a check (the driver's hot path tests it
        #: before calling watch).
        self.next_check = -math.inf

    def watch(self, now: float) -> None:
        """Check the config's files for changes if ``check_interval`` has passed since
        the last check (``now``: the adapter's monotonic clock)."""
        if now < self.next_check:
            return
        self.next_check = now + self._check_interval
        self._reload()

    def _reload(self) -> None:
        if isinstance(self._config, ConfigFile) and self._config.reload_if_changed():
            self._entries.clear()
            self._renewals.clear()
            if self._on_change is not None:
                self._on_change()

    async def entry(self, effect: LookupCredentials) -> LookupAnswer:
        """The config's entry for (origin, namespace) and where it came from, looked up
        once and remembered (again, once, for each new ``renewal`` number)."""
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

    async def _lookup(self, effect: LookupCredentials) -> LookupAnswer:
        key = (effect.origin, effect.namespace)
        try:
            source = _source_kind(self._config)
            with _trace.credential_lookup(effect.host, effect.downgraded, source) as traced:
                if effect.downgraded:
                    entry = LookupAnswer(ConfigEntry(), _DOWNGRADED)
                else:
                    entry = await self._ask_config(effect)
                traced.found(entry.entry)
        except Exception as exc:
            failure = self._lookup_failed(effect.host, exc)
        else:
            self._remember(key, entry)
            return entry
        self._remember(key, failure)
        # Raised outside the except block: a foreign exception (which may quote a
        # signed URL) must not ride along as __context__ either.
        raise failure

    def _lookup_failed(self, host: str, exc: Exception) -> CredentialLookupError:
        """The caller's one clear error for a failed lookup, scrubbed of any secret.

        Errors a ConfigFile raised carry no secret and stay the ``__cause__``. A custom
        Config may raise anything with any text: its exception is replaced by a
        ConfigError naming its type and holding its scrubbed message.
        """
        if isinstance(exc, OCIAuthError) and isinstance(self._config, ConfigFile):
            why, cause = str(exc), exc
        else:
            why = redact_text(str(exc))
            cause = ConfigError(f"{type(exc).__name__}: {why}", registry=host, step="config")
        failure = CredentialLookupError(
            f"cannot acquire auth info for registry {host!r}: {why}",
            registry=host,
            step="config",
        )
        failure.__cause__ = cause
        return failure

    def _remember(self, key: EntryKey, value: LookupAnswer | OCIAuthError) -> None:
        self._entries[key] = value
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def _ask_config(self, effect: LookupCredentials) -> LookupAnswer:
        host, namespace = effect.host, effect.namespace
        if self._config is None:
            return LookupAnswer(ConfigEntry(), "no configuration was given")
        self._stats.config_lookups += 1
        if isinstance(self._config, ConfigFile):
            self._reload()  # a lookup reads what is on disk now
            # A ConfigFile says where the answer came from: tell the story, count helper runs.
            res = await self._config.resolve(host, namespace)
            self._stats.helper_runs += len(res.helpers_asked)
            _trace.config_answered(res)
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
            return LookupAnswer(
                res.entry,
                _described(res, self._config.sources),
                res.kind in ("credHelpers", "credsStore"),
            )
        entry: ConfigEntry
        if namespace and isinstance(self._config, NamespacedConfig):
            entry = await self._config.entry_for_repository(host, namespace)
        else:
            entry = await self._config.entry_for_registry(host)
        name = _show(type(self._config).__name__)
        if not isinstance(entry, ConfigEntry):
            raise ConfigError(
                f"the configured {name} returned {type(entry).__name__}, not a ConfigEntry",
                registry=host,
                step="config",
            )
        # As for a helper's answer (ConfigFile): a credential that would break, or inject
        # into, the header or form it goes in is refused here, not by aiohttp later.
        bad = [f for f, text in _fields(entry) if _unsendable(text)]
        if bad:
            raise ConfigError(
                f"the configured {name}'s entry for {host}: its {bad[0]} is not a string,"
                " holds a control character or is not valid Unicode",
                registry=host,
                step="config",
            )
        if entry == ConfigEntry():
            return LookupAnswer(entry, f"the configured {name} had none")
        return LookupAnswer(entry, f"the configured {name}")


def _unsendable(text: object) -> bool:
    """Whether a credential cannot go in a header or form as it is (a custom Config's)."""
    if not isinstance(text, str) or _CONTROL.search(text):
        return True
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return True
    return False


#: Why a lookup was not made: the core saw plain http to a host it spoke https to.
_DOWNGRADED = "not looked up: plain http to a host spoken to over https"


def _place(source: str | None) -> str:
    """A configuration source as a message names it."""
    if source is None:
        return "the configuration"
    if source == "DOCKER_AUTH_CONFIG" or source.startswith("<"):
        return _show(source)  # the variable, or ConfigFile.from_dict's "<dict>"
    return f"config file {_show(source)}"


def _source_kind(config: Config | None) -> str:
    """What a credential lookup's span says the credentials come from."""
    if config is None:
        return "none"
    return "file" if isinstance(config, ConfigFile) else "custom"


def _key(key: str) -> str:
    # A key is a host or a URL; a URL's userinfo (nobody writes one, but a file may
    # hold anything) stays out of messages.
    shown = redact_url(key) if "@" in key and "://" in key else key
    return repr(_show(shown))


def _described(res: Resolution, sources: tuple[str, ...]) -> str:
    """Where a ConfigFile's answer came from, or where it looked in vain: for messages."""
    helper = f"helper docker-credential-{_show(res.helper or '')}"
    if res.entry != ConfigEntry():
        if res.kind == "credHelpers":
            return f"{helper}, credHelpers key {_key(res.key or '')} of {_place(res.source)}"
        if res.kind == "credsStore":
            return f"{helper}, credsStore of {_place(res.source)}"
        return f"{_place(res.source)}, key {_key(res.key or '')}"
    looked = ", ".join(_show(s) for s in sources)
    said = f"looked in {looked}" if looked else "no Docker or podman config file was found"
    if res.helpers_asked:
        asked = ", ".join(f"docker-credential-{_show(h)}" for h in dict.fromkeys(res.helpers_asked))
        said += f"; asked {asked}"
    return said


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
    with _trace.token_fetch(job) as traced, contextlib.closing(flow):
        while True:
            try:
                call = core.resume(flow, value, clock())
            except StopIteration as stop:
                result: AccessToken | OCIAuthError = stop.value
                traced.ended(result)
                return result
            value = await token_call(call)


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
    where = f"token server {call.url.host_port_subcomponent or call.url.host} for {call.registry}"
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
        with _trace.token_request(call, n + 1) as traced:
            reply, wait = await attempt(call, headers, where)
            traced.replied(reply)
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
