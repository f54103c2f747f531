"""The shared token-cache tier on Redis (extra ``redis``): :class:`RedisTokenStore`.

A :class:`~aociauth.shared_cache.SharedTokenStore` for a fleet of processes
and machines, on one Redis or a Redis Cluster (redis-py's asyncio client)::

    store = RedisTokenStore.from_url("redis://cache:6379/0", key=fleet_key)
    params = StdTransportParams(shared_cache=store)

What Redis holds, under ``PREFIX:{IDENTITY}:...`` (``IDENTITY`` is a keyed
hash of the registry, the user name and a digest of the secret, and the
braces make it a hash tag, so an identity's keys share a Cluster slot):

* ``PREFIX:{IDENTITY}:b:BUCKET``: a hash per realm and resource (type and
  name, hashed too), and one per realm for "any scope". Each field is one
  token, sealed with AES-GCM under the fleet key with the Redis key and field
  name as associated data; the field name starts with the expiry in
  milliseconds, so the write script can drop expired fields, and a hash keeps
  at most :data:`MAX_FIELDS`. The key expires with its longest-lived token.
  A token is written into the bucket of each resource it grants, so a lookup
  is one ``HGETALL`` of the wanted scope's first resource, whatever the number
  of tokens: the in-memory :class:`~aociauth.tokens.TokenCache`'s index.
* ``PREFIX:{IDENTITY}:l:LOCK``: the fetch lock of one (realm, scope):
  ``SET NX PX``, released by its holder with a compare-and-delete script.
  Waiters poll it with a growing, capped interval; it expires on its own
  after ``lock_ttl`` when the holder dies.

Every call has a short timeout. A failing Redis is treated as absent: the
store logs once per outage, counts, skips Redis for a back-off, and tries
again after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import anyio
import redis.asyncio
import redis.asyncio.cluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from aociauth._redact import redact_text
from aociauth._sealing import FleetKeys
from aociauth.scope import Scope
from aociauth.shared_cache import (
    SharedCacheError,
    SharedCacheStats,
    SharedIdentity,
    SharedToken,
)

__all__ = [
    "DEFAULT_LOCK_TTL",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT",
    "MAX_FIELDS",
    "MAX_INDEXED_RESOURCES",
    "RedisTokenStore",
]

log = logging.getLogger("aociauth.redis")

#: Seconds any one Redis call may take before the tier is treated as down.
DEFAULT_TIMEOUT = 0.2
#: Seconds a fetch lock lives: about one token fetch. A waiter waits no longer
#: (plus a poll), and a dead holder's lock is gone after it.
DEFAULT_LOCK_TTL = 5.0
#: A shared token is not handed out in its last seconds: other machines' clocks differ.
DEFAULT_EXPIRY_MARGIN = 5.0
#: First back-off after a failure; it doubles per failure up to the maximum.
DEFAULT_BACKOFF = 1.0
DEFAULT_MAX_BACKOFF = 30.0
#: Connections to a single Redis per store; more concurrent calls queue for one.
DEFAULT_MAX_CONNECTIONS = 16
#: Tokens kept per bucket (resource): the longest-lived ones.
MAX_FIELDS = 4
#: Resources of one token that are indexed; a token naming more is found by its first ones.
MAX_INDEXED_RESOURCES = 32

_FIRST_POLL = 0.005
_MAX_POLL = 0.05

_T = TypeVar("_T")

# KEYS: the buckets. ARGV: field, now (ms), time to live (ms), most fields,
# then one sealed entry per key.
_PUT_SCRIPT = """
local field = ARGV[1]
local now = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local most = tonumber(ARGV[4])
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, field, ARGV[4 + i])
  local live = {}
  for _, name in ipairs(redis.call('HKEYS', key)) do
    local expires = tonumber(string.match(name, '^(%d+):'))
    if expires == nil or expires <= now then
      redis.call('HDEL', key, name)
    else
      table.insert(live, {expires, name})
    end
  end
  if #live > most then
    table.sort(live, function(a, b) return a[1] < b[1] end)
    for j = 1, #live - most do
      redis.call('HDEL', key, live[j][2])
    end
  end
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return #KEYS
"""

# The holder deletes the lock only if it is still its own (it may have expired and been retaken).
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


if sys.version_info >= (3, 11):
    # Cheaper than anyio's cancel scope on the path every call takes (measured: tens of us).
    _deadline = asyncio.timeout
else:  # pragma: no cover - Python 3.10

    @contextlib.asynccontextmanager
    async def _deadline(seconds: float) -> AsyncIterator[None]:
        with anyio.fail_after(seconds):
            yield


def _no_setinfo() -> dict[str, None]:
    """Client options that skip CLIENT SETINFO on each new connection: fewer round
    trips in a cold burst (measured: about half the time of 160 concurrent first lookups).

    Newer redis-py deprecates ``lib_name``/``lib_version`` for ``driver_info``.
    """
    if "driver_info" in inspect.signature(redis.asyncio.Redis.__init__).parameters:
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}


_NO_SETINFO = _no_setinfo()


class _Unavailable(Exception):
    """Redis failed, timed out, or is in its back-off: answer as if there were no shared tier."""


class RedisTokenStore:
    """A :class:`~aociauth.shared_cache.SharedTokenStore` on Redis.

    Build it with :meth:`from_url`, or around a client of your own
    (``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``,
    ``decode_responses=False``), which :meth:`aclose` then leaves open unless
    ``owns_client``. ``key`` is the fleet's 32-byte key (see :meth:`from_url`).
    ``clock`` gives wall-clock epoch seconds, for tests. ``max_calls`` bounds the
    calls in flight (the rest queue, their timeout not yet running); None: no bound.

    A store belongs to the event loop it is first used on (its client's
    connections do), as a middleware does: one store per loop.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
        *,
        key: bytes,
        timeout: float = DEFAULT_TIMEOUT,
        prefix: str = "aociauth",
        lock_ttl: float = DEFAULT_LOCK_TTL,
        expiry_margin: float = DEFAULT_EXPIRY_MARGIN,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        owns_client: bool = False,
        where: str = "redis",
        clock: Callable[[], float] = time.time,
        max_calls: int | None = None,
    ) -> None:
        self._fleet = FleetKeys(key)
        _check_prefix(prefix)
        if timeout <= 0 or lock_ttl <= 0 or backoff <= 0 or max_backoff < backoff:
            raise SharedCacheError(
                "the shared cache's timeout, lock_ttl and backoff must be positive "
                "(and max_backoff at least backoff)"
            )
        self._client = client
        #: Calls in flight at most (the pool's connections): the rest queue here, and
        #: the timeout starts once a call has its turn. A burst waiting for a connection
        #: is not a slow Redis; after a failure the queue is skipped at once.
        self._slots = None if max_calls is None else anyio.Semaphore(max_calls)
        self._owns_client = owns_client
        self._timeout = timeout
        self._prefix = prefix
        self._lock_ttl = lock_ttl
        self._margin = expiry_margin
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._where = where
        self._clock = clock
        self.stats = SharedCacheStats()
        #: monotonic time before which Redis is not called, after a failure.
        self._retry_at = 0.0
        self._next_backoff = backoff
        self._down = False
        # redis-py's cluster client breaks when its first calls, which discover
        # the topology, run concurrently: discover once, before any other call.
        self._discovered = not isinstance(client, redis.asyncio.cluster.RedisCluster)
        self._discovering = anyio.Lock()
        self._put_script = client.register_script(_PUT_SCRIPT)
        self._release_script = client.register_script(_RELEASE_SCRIPT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key: bytes,
        timeout: float = DEFAULT_TIMEOUT,
        prefix: str = "aociauth",
        cluster: bool = False,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        **options: Any,
    ) -> RedisTokenStore:
        """A store on the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``).

        ``key`` is the fleet's secret: exactly 32 random bytes (for example
        ``secrets.token_bytes(32)``), the same in every process that shares
        tokens. It encrypts and authenticates every entry and names each
        identity's partition; a different key shares nothing. ``timeout``
        bounds every Redis call (connecting included), in seconds. Keys start
        with ``prefix:``, for Redis ACLs (``~prefix:*``). ``cluster=True``
        speaks the Redis Cluster protocol (``url`` names any one node).
        ``max_connections`` bounds a single Redis's connection pool; calls
        beyond it queue in the store, and ``timeout`` starts at a call's turn.
        ``options`` go to :class:`RedisTokenStore` (``lock_ttl``,
        ``expiry_margin``, ``backoff``, ...).

        Raises :class:`~aociauth.shared_cache.SharedCacheError` for a key that
        is not 32 bytes or an unusable prefix, before connecting to anything.
        """
        FleetKeys(key)
        _check_prefix(prefix)
        client_options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # One attempt: the store has its own answer to failure (skip Redis for a while).
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": False,
            **_NO_SETINFO,
        }
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
        if cluster:
            client = redis.asyncio.cluster.RedisCluster.from_url(url, **client_options)
        else:
            # A bounded pool that queues: a cold burst of lookups reuses a few
            # connections instead of opening one each (measured: 160 concurrent
            # lookups on 2 cores, 0.45 s unbounded, 0.1 s through 8 connections).
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=timeout, **client_options
            )
            client = redis.asyncio.Redis(connection_pool=pool)
        return cls(
            client,
            key=key,
            timeout=timeout,
            prefix=prefix,
            owns_client=True,
            where=_describe(url),
            **{"max_calls": None if cluster else max_connections, **options},
        )

    def __repr__(self) -> str:
        return f"<RedisTokenStore {self._where} prefix={self._prefix!r}>"

    async def __aenter__(self) -> RedisTokenStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client, if the store made it (:meth:`from_url`) or was told it owns it."""
        if self._owns_client:
            await self._client.aclose()

    # --- naming ------------------------------------------------------------------------

    def _base(self, identity: SharedIdentity) -> tuple[str, str]:
        ident = self._fleet.identity_name(identity)
        return ident, f"{self._prefix}:{{{ident}}}:"

    def _any_key(self, identity: SharedIdentity, realm: str) -> str:
        ident, base = self._base(identity)
        return base + "b:" + self._fleet.name("any", ident, realm)

    def _bucket_keys(
        self, identity: SharedIdentity, realm: str, scope: Scope, most: int
    ) -> list[str]:
        """The buckets of the first ``most`` resources ``scope`` names, in scope order."""
        ident, base = self._base(identity)
        keys: dict[str, None] = {}
        for rs in scope:
            if len(keys) >= most:
                break
            name = self._fleet.name("bucket", ident, realm, rs.resource_type, rs.resource)
            keys[base + "b:" + name] = None
        return list(keys)

    def lock_key(self, identity: SharedIdentity, realm: str, scope: Scope) -> str:
        """The Redis key of the fetch lock for ``scope`` (for tests and operators)."""
        ident, base = self._base(identity)
        return base + "l:" + self._fleet.name("lock", ident, realm, str(scope.canonical()))

    # --- calling Redis -----------------------------------------------------------------

    async def _run(self, make: Callable[[], Awaitable[_T]], *, in_backoff: bool = False) -> _T:
        """One Redis call, bounded by the timeout, through the circuit.

        Raises :class:`_Unavailable` when Redis is in its back-off (unless
        ``in_backoff``: call it anyway), fails or is too slow.
        """
        if self._slots is None:
            return await self._call(make, in_backoff)
        async with self._slots:
            return await self._call(make, in_backoff)

    async def _call(self, make: Callable[[], Awaitable[_T]], in_backoff: bool) -> _T:
        if not in_backoff and time.monotonic() < self._retry_at:
            self.stats.skipped += 1
            raise _Unavailable
        try:
            if not self._discovered:
                await self._discover()
            async with _deadline(self._timeout):
                result = await make()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            raise _Unavailable from None
        if self._down:
            self._down = False
            log.warning("shared token cache at %s answers again", self._where)
        self._next_backoff = self._backoff
        return result

    async def _discover(self) -> None:
        client = self._client
        async with self._discovering:
            if self._discovered or not isinstance(client, redis.asyncio.cluster.RedisCluster):
                return
            # Several round trips to several nodes: bounded, but not by one call's timeout.
            with anyio.fail_after(self._timeout * 5):
                await client.initialize()
            self._discovered = True

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self._retry_at = time.monotonic() + self._next_backoff
        if not self._down:
            self._down = True
            self.stats.outages += 1
            log.warning(
                "shared token cache at %s failed (%s: %s); going on without it, "
                "trying again after %.1f s",
                self._where,
                type(exc).__name__,
                redact_text(str(exc))[:200],
                self._next_backoff,
            )
        self._next_backoff = min(self._next_backoff * 2, self._max_backoff)

    # --- the SharedTokenStore protocol -------------------------------------------------

    async def get(self, identity: SharedIdentity, realm: str, scope: Scope) -> SharedToken | None:
        """A token of ``identity`` from ``realm`` whose scope contains ``scope``, or None.

        One ``HGETALL``: the bucket of the first resource ``scope`` names (the
        "any" bucket for the empty scope). Entries that fail authentication are
        counted in ``stats.rejected_entries`` and ignored; so are tokens that
        expire within the margin. Of the rest, the longest-lived wins.
        """
        if scope.is_unlimited():
            # No shared token can hold it: the unlimited scope has no spelling.
            self.stats.misses += 1
            return None
        if scope.is_empty():
            key = self._any_key(identity, realm)
        else:
            (key,) = self._bucket_keys(identity, realm, scope, 1)
        client = self._client
        try:
            entries = cast(Mapping[bytes, bytes], await self._run(lambda: client.hgetall(key)))
        except _Unavailable:
            self.stats.misses += 1
            return None
        best = self._best(key, entries, scope)
        if best is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return best

    def _best(self, key: str, entries: Mapping[bytes, bytes], scope: Scope) -> SharedToken | None:
        best: SharedToken | None = None
        usable_after = self._clock() + self._margin
        for field, blob in entries.items():
            token = self._fleet.open(bytes(blob), FleetKeys.place(key, bytes(field)))
            if token is None:
                self.stats.rejected_entries += 1
                continue
            if token.expires_at <= usable_after or not token.scope.contains(scope):
                continue
            if best is None or token.expires_at > best.expires_at:
                best = token
        return best

    async def put(self, identity: SharedIdentity, realm: str, token: SharedToken) -> None:
        """Share ``token`` until it expires.

        Written, in one script call, to the bucket of each resource its scope
        names (up to :data:`MAX_INDEXED_RESOURCES`) and to the realm's "any"
        bucket, each copy sealed for its own key. A token already within the
        margin of its expiry, or of the unlimited scope, is not written.
        """
        now = self._clock()
        life = token.expires_at - now
        if life <= self._margin or token.scope.is_unlimited():
            return
        buckets = self._bucket_keys(identity, realm, token.scope, MAX_INDEXED_RESOURCES)
        keys = [*buckets, self._any_key(identity, realm)]
        field = f"{int(token.expires_at * 1000)}:{secrets.token_hex(8)}"
        blobs = [self._fleet.seal(token, FleetKeys.place(k, field.encode())) for k in keys]
        ttl_ms = max(1, int(life * 1000))
        args: list[str | int | bytes] = [field, int(now * 1000), ttl_ms, MAX_FIELDS, *blobs]
        script = self._put_script
        try:
            await self._run(lambda: script(keys=keys, args=args))
        except _Unavailable:
            return
        self.stats.writes += 1

    def fetch_lock(self, identity: SharedIdentity, realm: str, scope: Scope) -> _FetchLock:
        """The fleet-wide lock on fetching ``scope`` (see
        :meth:`~aociauth.shared_cache.SharedTokenStore.fetch_lock`).

        Entering sets the lock (``SET NX PX lock_ttl``) or, when it is taken,
        polls it until it is gone, for at most ``lock_ttl`` and a poll: True
        means fetch, False means its holder is done (look again). Leaving
        releases the lock if this caller holds it.
        """
        return _FetchLock(self, self.lock_key(identity, realm, scope))

    async def _acquire(self, key: str) -> tuple[bool, str | None]:
        """(fetch?, the lock's value when this caller holds it)."""
        mine = secrets.token_hex(16)
        ttl_ms = max(1, int(self._lock_ttl * 1000))
        client = self._client
        try:
            took = await self._run(lambda: client.set(key, mine, nx=True, px=ttl_ms))
        except _Unavailable:
            return True, None
        if took:
            self.stats.lock_acquired += 1
            return True, mine
        self.stats.lock_waits += 1
        deadline = time.monotonic() + self._lock_ttl + _MAX_POLL
        delay = _FIRST_POLL
        while True:
            await anyio.sleep(delay)
            try:
                held = await self._run(lambda: client.exists(key))
            except _Unavailable:
                return True, None
            if not held:
                return False, None
            if time.monotonic() >= deadline:
                # Retaken since (its holder outlived it and another took it): stop waiting.
                self.stats.lock_timeouts += 1
                return True, None
            delay = min(delay * 2, _MAX_POLL)

    async def _release(self, key: str, mine: str) -> None:
        script = self._release_script
        # Shielded: a cancelled fetch must still let the fleet go on before the lock expires.
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(_Unavailable):  # else it expires on its own
                # Tried even in the back-off: a lock left to expire holds the whole
                # fleet for lock_ttl after one slow call.
                await self._run(lambda: script(keys=[key], args=[mine]), in_backoff=True)


class _FetchLock:
    """What :meth:`RedisTokenStore.fetch_lock` returns: enter to take or wait for the lock."""

    __slots__ = ("_key", "_mine", "_store")

    def __init__(self, store: RedisTokenStore, key: str) -> None:
        self._store = store
        self._key = key
        self._mine: str | None = None

    async def __aenter__(self) -> bool:
        fetch, self._mine = await self._store._acquire(self._key)
        return fetch

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        mine, self._mine = self._mine, None
        if mine is not None:
            await self._store._release(self._key, mine)


def _check_prefix(prefix: str) -> None:
    # Braces would make a hash tag of the prefix and put the whole fleet on one Cluster slot.
    if not prefix or any(c in prefix for c in "{} \t\r\n"):
        raise SharedCacheError(
            "the shared cache's key prefix must be non-empty, without braces or white space"
        )


def _describe(url: str) -> str:
    """Where a URL points, for logs: host and port (or socket path), never credentials."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        host = parts.hostname or "localhost"
        return f"{host}:{parts.port or 6379}"
    except ValueError:
        return "redis"
