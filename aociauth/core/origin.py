"""What is known of one registry origin, as an explicit state machine.

Each origin (scheme, host, port) is in one :class:`Phase`; every change of
phase is an :class:`Event` applied by :func:`transition`, the one place the
rules live (in the manner of h11's state table). States are immutable values:
:class:`Origins` holds the current one per origin, bounded.

=============  =====================  =========================================
phase          means                  events that leave it
=============  =====================  =========================================
``NEW``        never answered         ``ProbeSent`` -> ``PROBING``;
                                      ``Answered`` -> ``OPEN``/``BASIC``/``BEARER``
``PROBING``    a first request is     ``ProbeEnded`` -> ``NEW`` (it got no answer);
               out, a burst waits     ``Answered`` -> ``OPEN``/``BASIC``/``BEARER``
``OPEN``       answered, never        ``Answered`` with a challenge ->
               challenged             ``BASIC``/``BEARER``
``BASIC``      challenged Basic       ``Answered`` with Bearer -> ``BEARER``
``BEARER``     challenged Bearer      ``Answered`` with another Bearer challenge ->
                                      ``BEARER`` (the newer challenge)
=============  =====================  =========================================

A Basic challenge to an origin in ``BEARER`` leaves it in ``BEARER``: some
registries (Harbor, for a denied repository) answer Basic on a few routes,
and switching the whole origin to Basic would send the password with every
request whose token is not cached. Such a challenge is answered for its own
request alone (see :mod:`aociauth.core.flow`).

Flags beside the phase record what the origin's token server taught us:
``narrow_only`` (it refuses a scope wider than the challenge's, or grants only
part of one, so only the required scope is asked for), ``one_scope`` (it
reads one ``scope`` parameter of several, so a required scope of several items
goes in one parameter), and ``ahead_worked`` and ``ahead_refused`` (a token
fetched ahead of the registry's challenge was granted, or refused: some token
servers grant only what the registry challenged for, so after one refusal no
token is fetched ahead there again).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from yarl import URL

from aociauth.challenge import Challenge

__all__ = [
    "Answered",
    "Event",
    "FetchAheadRefused",
    "FetchAheadWorked",
    "OriginKey",
    "OriginState",
    "Origins",
    "Phase",
    "ProbeEnded",
    "ProbeSent",
    "RegistryCallSeen",
    "WideScopeRefused",
    "origin_key",
    "transition",
]


class Phase(enum.Enum):
    """Where an origin stands in the auth flow."""

    NEW = "new"
    PROBING = "probing"
    OPEN = "open"
    BASIC = "basic"
    BEARER = "bearer"


#: An origin as a dict key: (scheme, host, port). Cheaper to hash than a URL.
OriginKey = tuple[str, str, "int | None"]


def origin_key(url: URL) -> OriginKey:
    """The key of the origin ``url`` belongs to."""
    return (url.scheme, url.raw_host or "", url.port)


@dataclass(frozen=True)
class OriginState:
    """One origin's phase, its challenge and what its token server taught us."""

    key: OriginKey
    url: URL
    #: The registry name the config is asked about (``host[:port]``).
    host: str
    phase: Phase = Phase.NEW
    #: The challenge the origin's phase came from (``BASIC`` and ``BEARER`` only).
    challenge: Challenge | None = None
    #: A registry API call went to it, or it challenged: credentials are looked up.
    registry: bool = False
    #: Its token server refused a scope wider than the required one.
    narrow_only: bool = False
    #: Its token server reads one ``scope`` parameter of several.
    one_scope: bool = False
    #: Its token server granted a token fetched ahead of the registry's challenge.
    ahead_worked: bool = False
    #: Its token server refused a token fetched ahead: none is fetched ahead again.
    ahead_refused: bool = False

    @property
    def holds_back(self) -> bool:
        """Whether a burst of requests should wait for a first answer."""
        return self.phase in (Phase.NEW, Phase.PROBING)

    @property
    def bearer(self) -> Challenge | None:
        """The Bearer challenge to fetch tokens for, if the origin is in ``BEARER``."""
        return self.challenge if self.phase is Phase.BEARER else None


@dataclass(frozen=True)
class ProbeSent:
    """The first request of a burst goes out; the others wait for its answer."""


@dataclass(frozen=True)
class ProbeEnded:
    """The first request's exchange is over (answered, failed or cancelled)."""


@dataclass(frozen=True)
class Answered:
    """The origin answered; ``challenge`` is the usable one of a 401, if any."""

    challenge: Challenge | None = None


@dataclass(frozen=True)
class RegistryCallSeen:
    """A request to the origin was a registry API call."""


@dataclass(frozen=True)
class WideScopeRefused:
    """The origin's token server refused a scope wider than the required one; with
    ``one_scope``, it granted what was required once asked for it alone, having read
    one ``scope`` parameter of the wide request."""

    one_scope: bool = False


@dataclass(frozen=True)
class FetchAheadWorked:
    """The origin's token server granted a token fetched ahead of the challenge."""


@dataclass(frozen=True)
class FetchAheadRefused:
    """The origin's token server refused a token fetched ahead of the challenge."""


Event = (
    ProbeSent
    | ProbeEnded
    | Answered
    | RegistryCallSeen
    | WideScopeRefused
    | FetchAheadWorked
    | FetchAheadRefused
)

_CHALLENGED = {"basic": Phase.BASIC, "bearer": Phase.BEARER}


def transition(state: OriginState, event: Event) -> OriginState:
    """The state after ``event``: every rule of the table in the module docstring."""
    if isinstance(event, ProbeSent):
        return replace(state, phase=Phase.PROBING) if state.phase is Phase.NEW else state
    if isinstance(event, ProbeEnded):
        return replace(state, phase=Phase.NEW) if state.phase is Phase.PROBING else state
    if isinstance(event, RegistryCallSeen):
        return state if state.registry else replace(state, registry=True)
    if isinstance(event, WideScopeRefused):
        if state.narrow_only and (state.one_scope or not event.one_scope):
            return state
        return replace(state, narrow_only=True, one_scope=state.one_scope or event.one_scope)
    if isinstance(event, FetchAheadWorked):
        return state if state.ahead_worked else replace(state, ahead_worked=True)
    if isinstance(event, FetchAheadRefused):
        return state if state.ahead_refused else replace(state, ahead_refused=True)
    ch = event.challenge
    if ch is None:
        return replace(state, phase=Phase.OPEN) if state.holds_back else state
    phase = _CHALLENGED[ch.scheme]
    if phase is Phase.BASIC and state.phase is Phase.BEARER:
        return state  # a mixed challenge: answered for its request alone
    return replace(state, phase=phase, challenge=ch, registry=True)


class Origins:
    """The current state of each origin met, least recently used out past ``max_origins``.

    Bounded because a registry (or whoever answers in its name) chooses the
    hosts it redirects to: without a bound, 100,000 distinct redirect hosts
    would be 100,000 entries kept for the program's life.
    """

    def __init__(
        self, max_origins: int = 4096, on_change: Callable[[], None] | None = None
    ) -> None:
        if max_origins < 1:
            raise ValueError("max_origins must be at least 1")
        self.max_origins = max_origins
        #: Called when an origin's state is replaced or evicted (not when one is met).
        self._on_change = on_change or _nothing
        self._states: OrderedDict[OriginKey, OriginState] = OrderedDict()
        #: Hosts spoken to over https (bounded with the states): plain http to one
        #: of them is a downgrade.
        self._https_hosts: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def __iter__(self) -> Iterator[OriginState]:
        return iter(list(self._states.values()))

    def get(self, url: URL) -> OriginState | None:
        """The state of the origin of ``url`` if it is known."""
        return self._states.get(origin_key(url))

    def state(self, url: URL, host: Callable[[URL], str]) -> OriginState:
        """The state of the origin of ``url``, a new one if it was never met
        (``host(url)`` names it for the config)."""
        key = origin_key(url)
        st = self._states.get(key)
        if st is None:
            origin = url.origin()
            st = self._states[key] = OriginState(key=key, url=origin, host=host(url))
            if origin.scheme == "https" and origin.host:
                self._https_hosts[origin.host] = None
                self._bound(self._https_hosts)
            self._bound_states()
        else:
            self._states.move_to_end(key)
        return st

    @property
    def table(self) -> OrderedDict[OriginKey, OriginState]:
        """Each origin's current state by key, least recently used first; for a caller's
        hot path, which moves an origin it uses to the end (no other change: states
        change through :meth:`apply`)."""
        return self._states

    def holds(self, st: OriginState) -> bool:
        """Whether ``st`` is still its origin's current state; if so, the origin counts
        as just used (as :meth:`state` would count it)."""
        if self._states.get(st.key) is not st:
            return False
        self._states.move_to_end(st.key)
        return True

    def current(self, st: OriginState) -> OriginState:
        """The state now of the origin ``st`` is a state of (``st`` if it was evicted)."""
        return self._states.get(st.key) or st

    def apply(self, st: OriginState, event: Event) -> OriginState:
        """Apply ``event`` to the current state of ``st``'s origin and keep the new state.

        An origin evicted meanwhile starts again from ``st``.
        """
        current = self._states.get(st.key)
        if current is None:
            current = self._states[st.key] = st
            self._bound_states()
        new = transition(current, event)
        if new is not current:
            self._states[st.key] = new
            self._on_change()
        return new

    def spoke_https_to(self, host: str) -> bool:
        """Whether an https origin on ``host`` was met (plain http to it is a downgrade)."""
        return host in self._https_hosts

    def _bound_states(self) -> None:
        if len(self._states) > self.max_origins:
            self._bound(self._states)
            self._on_change()

    def _bound(self, table: OrderedDict[Any, Any]) -> None:
        while len(table) > self.max_origins:
            table.popitem(last=False)


def _nothing() -> None:
    pass
