"""The HTTP sessions token requests go out on: one connection pool per trust decision.

The address rule (:mod:`aociauth._addresses`) is applied when a connection
is made, by the connector's resolver. A keep-alive connection is not resolved
again when it is reused, so a single pool serving every token request lets a
connection made while a loopback token server was allowed (a registry on this
machine) carry a later token request whose registry is public to that same
address. :class:`TokenSessions` therefore keeps one session, with its own
connector and resolver, per :class:`~aociauth._addresses.TrustDecision`: a
pooled connection only ever serves requests judged exactly as it was.

The sessions also hold no ambient state: cookies are neither stored nor sent
(:class:`aiohttp.DummyCookieJar`), no proxy settings or ``.netrc`` are read
from the environment, and there are no default headers, so nothing one
realm or identity was told reaches another's token request.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver

from aociauth._addresses import TrustDecision, on_this_machine
from aociauth._resolver import RealmGuardResolver
from aociauth.realm import RealmPolicy

__all__ = ["TokenSessions", "token_trust"]


def token_trust(registry_host: str, policy: RealmPolicy) -> TrustDecision:
    """The trust decision for token requests made on behalf of the registry at ``registry_host``.

    Loopback is allowed only when the registry itself is on this machine,
    private ranges always (the realm policy has judged the name), and
    everything but cloud metadata when the policy allows private realms.
    """
    if policy.allow_private_realms:
        return TrustDecision(unrestricted=True)
    return TrustDecision(loopback=on_this_machine(registry_host), private=True)


class TokenSessions:
    """Owns the sessions token requests are sent on, one per trust decision.

    ``inner_resolver`` makes the resolver each guard asks (aiohttp's default
    when None); tests pass one that answers from a table. Use as an async
    context manager or call :meth:`close`.
    """

    def __init__(self, *, inner_resolver: Callable[[], AbstractResolver] | None = None) -> None:
        self._inner_resolver = inner_resolver
        self._sessions: dict[TrustDecision, aiohttp.ClientSession] = {}
        self._closed = False

    def session_for(self, trust: TrustDecision) -> aiohttp.ClientSession:
        """The session for token requests judged under ``trust``; made on first use.

        Call it from a coroutine (aiohttp binds a session to the running loop).
        Raises RuntimeError once :meth:`close` has been called.
        """
        if self._closed:
            raise RuntimeError("TokenSessions is closed")
        session = self._sessions.get(trust)
        if session is None or session.closed:
            inner = self._inner_resolver() if self._inner_resolver is not None else None
            connector = aiohttp.TCPConnector(
                resolver=RealmGuardResolver(inner, trust=trust),
                # Every new connection is judged by a fresh resolution: a cached
                # answer could outlive a DNS change made to pass the check.
                use_dns_cache=False,
            )
            session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
            )
            self._sessions[trust] = session
        return session

    @property
    def decisions(self) -> frozenset[TrustDecision]:
        """The trust decisions that have a session now."""
        return frozenset(t for t, s in self._sessions.items() if not s.closed)

    async def close(self) -> None:
        """Close every session (and so every pooled connection). Idempotent."""
        self._closed = True
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def __aenter__(self) -> TokenSessions:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
