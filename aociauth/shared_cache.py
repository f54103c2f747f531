"""A second token-cache tier shared by processes and machines: its values and its protocol.

The in-memory :class:`aociauth.tokens.TokenCache` stays the first tier. A
process that misses it asks a :class:`SharedTokenStore` before the token
server, and writes what it fetched back, so a fleet of processes pulling the
same repositories asks the token server about once per scope, not once per
process. :func:`shared_fetch` is that whole dance (look, take the fleet-wide
fetch lock or wait for its holder, look again, fetch, write back) over any
store; :mod:`aociauth.redis` implements the store on Redis.

Nothing here does I/O of its own or imports aiohttp: the values are plain and
the protocol is what a driver awaits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, fields
from typing import Protocol, runtime_checkable

from aociauth._redact import mask, token_repr
from aociauth.errors import OCIAuthError
from aociauth.scope import Scope

__all__ = [
    "SharedCacheError",
    "SharedCacheStats",
    "SharedIdentity",
    "SharedToken",
    "SharedTokenStore",
    "shared_fetch",
]


class SharedCacheError(OCIAuthError):
    """A shared token store was configured wrongly (for example a key of the wrong length).

    Raised when a store is built, never while requests run: a shared tier that
    fails at run time is skipped, not raised. Messages never hold the key.
    """

    def __init__(self, message: str):
        super().__init__(message, step="shared-cache")


@dataclass(frozen=True)
class SharedIdentity:
    """Whose tokens these are: a registry and the credentials used with it.

    Never stored as such: a store keeps only a keyed hash of the three fields,
    and of ``secret`` only a digest goes into that hash. Two identities that
    differ in any field share no entry.
    """

    #: The registry's ``host[:port]``, for example ``"ghcr.io"``.
    registry: str
    #: The user name; ``""`` when anonymous.
    username: str
    #: The password or refresh token; ``""`` when anonymous.
    secret: str = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"SharedIdentity(registry={self.registry!r}, username={self.username!r}, "
            f"secret={mask(self.secret)})"
        )


@dataclass(frozen=True)
class SharedToken:
    """A bearer token as the fleet shares it.

    Times are wall-clock epoch seconds (``time.time()``): processes on
    different machines share no monotonic clock.
    """

    #: The bearer token itself.
    value: str = field(repr=False)
    #: What it grants (spelt with ``str(scope)``, read back with ``parse_scope``).
    scope: Scope
    #: When it stops working.
    expires_at: float
    #: When it was issued, where known: lets a reader tell how much of its life is left.
    issued_at: float | None = None

    def __repr__(self) -> str:
        return token_repr("SharedToken", str(self.scope), self.expires_at)


@dataclass
class SharedCacheStats:
    """Counters of what a shared store did, to assert on and to log."""

    #: ``get`` calls that found a usable token.
    hits: int = 0
    #: ``get`` calls that found none (the shared tier being skipped included).
    misses: int = 0
    #: Tokens written.
    writes: int = 0
    #: Entries that failed authentication (tampered, moved, or sealed with another key): ignored.
    rejected_entries: int = 0
    #: Calls to the shared tier that failed or timed out.
    errors: int = 0
    #: Times the shared tier went from working to failing (each is logged once).
    outages: int = 0
    #: Calls not made because the tier had just failed and is in its back-off.
    skipped: int = 0
    #: ``fetch_lock`` entries that took the lock.
    lock_acquired: int = 0
    #: ``fetch_lock`` entries that found the lock taken and waited for its holder.
    lock_waits: int = 0
    #: Waits that reached their bound with the lock still held (the waiter fetches itself).
    lock_timeouts: int = 0

    def as_dict(self) -> dict[str, int]:
        """A plain copy, for printing or JSON."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@runtime_checkable
class SharedTokenStore(Protocol):
    """A token cache shared by processes: what the middleware's driver awaits.

    Every method answers as if there were no shared tier when the store cannot
    reach its backend: ``get`` finds nothing, ``put`` writes nothing, and
    ``fetch_lock`` says "fetch it yourself". None of them raises for that.
    """

    stats: SharedCacheStats

    async def get(self, identity: SharedIdentity, realm: str, scope: Scope) -> SharedToken | None:
        """A token of ``identity`` from ``realm`` whose scope contains ``scope`` and that
        does not expire within the store's margin, or None."""
        ...

    async def put(self, identity: SharedIdentity, realm: str, token: SharedToken) -> None:
        """Share ``token``, for as long as it lives."""
        ...

    def fetch_lock(
        self, identity: SharedIdentity, realm: str, scope: Scope
    ) -> AbstractAsyncContextManager[bool]:
        """The fleet-wide lock on fetching ``scope``.

        Entering gives True when this caller should fetch (and ``put``): it holds
        the lock, or could not tell (no shared tier, or the wait reached its
        bound). It gives False when another process held the lock and has since
        released it (or its lock expired): call ``get`` again, and fetch only
        if that misses. Entering waits at most about the lock's lifetime.
        """
        ...

    async def aclose(self) -> None:
        """Release the connections the store owns."""
        ...


async def shared_fetch(
    store: SharedTokenStore,
    identity: SharedIdentity,
    realm: str,
    scope: Scope,
    fetch: Callable[[], Awaitable[SharedToken]],
    *,
    fresher_than: float | None = None,
    accept: Callable[[SharedToken], bool] | None = None,
    rounds: int = 2,
) -> tuple[SharedToken, bool]:
    """Find ``scope``'s token in ``store``, or fetch it once for the whole fleet.

    Returns the token and whether this call ran ``fetch``. The lock holder
    looks again after taking the lock (a holder that just finished may have
    released it after writing), so concurrent callers cause one fetch. When a
    holder dies, its lock expires and the next round elects another; after
    ``rounds`` rounds without a token the caller fetches on its own. An
    exception from ``fetch`` propagates, and the lock is released.

    ``fresher_than`` (wall-clock epoch seconds) ignores stored tokens expiring
    no later than it: a refresh ahead passes its current token's expiry, and a
    retry after the registry refused a token passes that token's, so neither
    is handed back the token it is replacing. ``accept``, when given, is asked
    of each stored token found; one it rejects counts as not found (a driver
    rejects the very token the registry refused, and one due for refresh).
    """

    async def look() -> SharedToken | None:
        found = await store.get(identity, realm, scope)
        if found is None or (fresher_than is not None and found.expires_at <= fresher_than):
            return None
        if accept is not None and not accept(found):
            return None
        return found

    found = await look()
    if found is not None:
        return found, False
    for _ in range(rounds):
        async with store.fetch_lock(identity, realm, scope) as mine:
            if mine:
                found = await look()
                if found is not None:
                    return found, False
                token = await fetch()
                await store.put(identity, realm, token)
                return token, True
        found = await look()
        if found is not None:
            return found, False
    token = await fetch()
    await store.put(identity, realm, token)
    return token, True
