"""The per-origin state machine (aociauth.core.origin), with plain values: no server, no loop."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from aociauth.challenge import Challenge
from aociauth.core.origin import (
    Answered,
    Event,
    FetchAheadRefused,
    FetchAheadWorked,
    Origins,
    OriginState,
    Phase,
    ProbeEnded,
    ProbeSent,
    RegistryCallSeen,
    WideScopeRefused,
    transition,
)

ORIGIN = URL("https://reg.example")
BASIC = Challenge("basic", {"realm": "reg"})
BEARER = Challenge("bearer", {"realm": "https://reg.example/token", "service": "reg"})
BEARER2 = Challenge("bearer", {"realm": "https://reg.example/token2", "service": "reg"})

#: The challenge an origin in each phase holds.
HELD = {
    Phase.NEW: None,
    Phase.PROBING: None,
    Phase.OPEN: None,
    Phase.BASIC: BASIC,
    Phase.BEARER: BEARER,
}

EVENTS: dict[str, Event] = {
    "probe-sent": ProbeSent(),
    "probe-ended": ProbeEnded(),
    "answered": Answered(),
    "answered-basic": Answered(BASIC),
    "answered-bearer": Answered(BEARER2),
    "registry-call": RegistryCallSeen(),
    "wide-refused": WideScopeRefused(),
    "one-scope": WideScopeRefused(one_scope=True),
    "ahead-worked": FetchAheadWorked(),
    "ahead-refused": FetchAheadRefused(),
}

# The table of the module docstring, written out: phase x event -> phase after.
NE, PR, OP, BA, BE = Phase.NEW, Phase.PROBING, Phase.OPEN, Phase.BASIC, Phase.BEARER
PHASE_AFTER: dict[Phase, dict[str, Phase]] = {
    #            probe-sent  probe-ended  answered  basic  bearer  registry  wide  one  ahead(2)
    NE: dict(zip(EVENTS, [PR, NE, OP, BA, BE, NE, NE, NE, NE, NE], strict=True)),
    PR: dict(zip(EVENTS, [PR, NE, OP, BA, BE, PR, PR, PR, PR, PR], strict=True)),
    OP: dict(zip(EVENTS, [OP, OP, OP, BA, BE, OP, OP, OP, OP, OP], strict=True)),
    BA: dict(zip(EVENTS, [BA, BA, BA, BA, BE, BA, BA, BA, BA, BA], strict=True)),
    # A Basic challenge to a Bearer origin is answered for its request alone.
    BE: dict(zip(EVENTS, [BE, BE, BE, BE, BE, BE, BE, BE, BE, BE], strict=True)),
}

#: The challenge the state holds after the event (None: the one it held before).
CHALLENGE_AFTER = {"answered-basic": BASIC, "answered-bearer": BEARER2}


class Host(str):
    """A registry name that is also the function naming an origin's registry, so
    :meth:`Origins.state` takes it whether it wants the name or the function."""

    def __call__(self, url: URL) -> str:
        return str(self)


def meet(origins: Origins, url: URL, host: str) -> OriginState:
    """The state of ``url``'s origin, met now."""
    return origins.state(url, Host(host))


def fresh() -> OriginState:
    """The state of an origin never met."""
    return meet(Origins(), ORIGIN, "reg.example")


def state(
    phase: Phase, *, registry: bool = False, narrow_only: bool = False, one_scope: bool = False
) -> OriginState:
    return replace(
        fresh(),
        phase=phase,
        challenge=HELD[phase],
        registry=registry,
        narrow_only=narrow_only or one_scope,
        one_scope=one_scope,
    )


CASES = [
    (phase, name, registry, narrow, one)
    for phase in Phase
    for name in EVENTS
    for registry in (False, True)
    for narrow in (False, True)
    for one in (False, True)
    if narrow or not one  # one_scope implies narrow_only
]


@pytest.mark.parametrize(("phase", "event", "registry", "narrow", "one"), CASES)
def test_transition_table(
    phase: Phase, event: str, registry: bool, narrow: bool, one: bool
) -> None:
    before = state(phase, registry=registry, narrow_only=narrow, one_scope=one)
    after = transition(before, EVENTS[event])
    expected_phase = PHASE_AFTER[phase][event]
    assert after.phase is expected_phase
    ignored_basic = event == "answered-basic" and phase is Phase.BEARER
    if event in CHALLENGE_AFTER and not ignored_basic:
        assert after.challenge == CHALLENGE_AFTER[event]
        assert after.registry  # an origin that challenged is a registry
    else:
        assert after.challenge == before.challenge
        assert after.registry is (registry or event == "registry-call")
    assert after.narrow_only is (narrow or event in ("wide-refused", "one-scope"))
    assert after.one_scope is (one or event == "one-scope")
    assert after.ahead_worked is (event == "ahead-worked")
    assert after.ahead_refused is (event == "ahead-refused")
    assert (after.url, after.host) == (before.url, before.host)
    if after == before and event not in CHALLENGE_AFTER:
        # No change makes no new state: Origins.apply keeps the one it has.
        assert after is before


def test_the_table_covers_every_phase_and_event() -> None:
    assert set(PHASE_AFTER) == set(Phase)
    assert all(set(row) == set(EVENTS) for row in PHASE_AFTER.values())


@pytest.mark.parametrize(
    ("phase", "holds_back", "bearer"),
    [
        (Phase.NEW, True, None),
        (Phase.PROBING, True, None),
        (Phase.OPEN, False, None),
        (Phase.BASIC, False, None),
        (Phase.BEARER, False, BEARER),
    ],
)
def test_holds_back_and_bearer(phase: Phase, holds_back: bool, bearer: Challenge | None) -> None:
    st_ = state(phase)
    assert st_.holds_back is holds_back
    assert st_.bearer == bearer


def test_bearer_is_only_read_in_the_bearer_phase() -> None:
    # A Basic origin's challenge is never taken for a token server's.
    assert replace(state(Phase.BASIC), challenge=BEARER).bearer is None


def test_a_new_state_knows_nothing() -> None:
    st_ = fresh()
    assert (st_.url, st_.host) == (ORIGIN, "reg.example")
    assert st_.phase is Phase.NEW
    assert st_.challenge is None
    assert not st_.registry
    assert not st_.narrow_only


# -- Origins -------------------------------------------------------------------


def url(n: int, scheme: str = "https") -> URL:
    return URL(f"{scheme}://r{n}.example")


def test_origins_state_is_created_once_and_kept() -> None:
    origins = Origins(4)
    assert origins.get(ORIGIN) is None
    first = meet(origins, ORIGIN, "reg.example")
    assert first == fresh()
    assert meet(origins, ORIGIN, "reg.example") is first
    assert origins.get(ORIGIN) is first
    assert len(origins) == 1
    assert list(origins) == [first]


def test_origins_are_bounded_least_recently_used_out() -> None:
    origins = Origins(2)
    meet(origins, url(1), "r1.example")
    meet(origins, url(2), "r2.example")
    meet(origins, url(1), "r1.example")  # used again: r2 is now the oldest
    meet(origins, url(3), "r3.example")
    assert len(origins) == 2
    assert origins.get(url(1)) is not None
    assert origins.get(url(2)) is None
    assert origins.get(url(3)) is not None
    assert [s.url for s in origins] == [url(1), url(3)]


def test_origins_bound_of_one() -> None:
    origins = Origins(1)
    meet(origins, url(1), "r1.example")
    meet(origins, url(2), "r2.example")
    assert [s.url for s in origins] == [url(2)]


@pytest.mark.parametrize("bad", [0, -1])
def test_origins_need_room_for_one(bad: int) -> None:
    with pytest.raises(ValueError, match=r"^max_origins must be at least 1$"):
        Origins(bad)


def test_origins_default_bound() -> None:
    assert Origins().max_origins == 4096


def test_apply_keeps_the_new_state() -> None:
    origins = Origins(4)
    st_ = meet(origins, ORIGIN, "reg.example")
    probing = origins.apply(st_, ProbeSent())
    assert probing.phase is Phase.PROBING
    assert origins.get(ORIGIN) is probing
    # Applied to the current state, not to the stale value passed in.
    opened = origins.apply(st_, RegistryCallSeen())
    assert opened.phase is Phase.PROBING
    assert opened.registry
    assert origins.get(ORIGIN) is opened


def test_apply_to_an_evicted_origin_starts_again_from_the_state_given() -> None:
    origins = Origins(1)
    st_ = origins.apply(meet(origins, url(1), "r1.example"), WideScopeRefused())
    meet(origins, url(2), "r2.example")  # evicts r1
    assert origins.get(url(1)) is None
    again = origins.apply(st_, Answered(BEARER))
    assert again.phase is Phase.BEARER
    assert again.narrow_only  # what the state given knew
    assert origins.get(url(1)) is again
    assert len(origins) == 1  # and the bound holds
    assert origins.get(url(2)) is None


def test_apply_that_changes_nothing_keeps_the_state() -> None:
    origins = Origins(4)
    st_ = origins.apply(meet(origins, ORIGIN, "reg.example"), RegistryCallSeen())
    assert origins.apply(st_, RegistryCallSeen()) is st_
    assert origins.get(ORIGIN) is st_


@pytest.mark.parametrize(
    ("flag", "event"),
    [("ahead_worked", FetchAheadWorked()), ("ahead_refused", FetchAheadRefused())],
)
def test_what_a_token_server_taught_us_again_keeps_the_state(flag: str, event: Event) -> None:
    # Learnt once, the same lesson again is no change: the state (and with it what
    # the hot path remembers of it, see Origins.holds) stands.
    taught = replace(state(Phase.BEARER, registry=True), **{flag: True})
    assert transition(taught, event) is taught
    origins = Origins(4)
    current = origins.apply(meet(origins, ORIGIN, "reg.example"), event)
    assert origins.apply(current, event) is current
    assert origins.holds(current)


def test_holds_the_current_state_only_and_counts_it_as_used() -> None:
    origins = Origins(2)
    first = meet(origins, url(1), "r1.example")
    assert origins.holds(first)
    second = meet(origins, url(2), "r2.example")
    changed = origins.apply(second, RegistryCallSeen())
    assert not origins.holds(second)  # a state it no longer is
    assert origins.holds(changed)
    assert origins.holds(first)  # r1 used again: r2 is now the oldest
    meet(origins, url(3), "r3.example")
    assert origins.get(url(1)) is first
    assert origins.get(url(2)) is None
    assert not origins.holds(changed)  # evicted


def test_spoke_https_to() -> None:
    origins = Origins(4)
    meet(origins, URL("http://plain.example"), "plain.example")
    meet(origins, URL("https://secure.example:8443"), "secure.example:8443")
    assert origins.spoke_https_to("secure.example")  # any port of the host
    assert not origins.spoke_https_to("plain.example")
    assert not origins.spoke_https_to("other.example")


def test_https_hosts_are_bounded_too() -> None:
    origins = Origins(2)
    for n in range(1, 4):
        meet(origins, url(n), f"r{n}.example")
    assert not origins.spoke_https_to("r1.example")
    assert origins.spoke_https_to("r2.example")
    assert origins.spoke_https_to("r3.example")


def test_https_host_is_noted_once_per_new_origin() -> None:
    origins = Origins(2)
    meet(origins, url(1), "r1.example")
    meet(origins, url(2), "r2.example")
    meet(origins, url(1), "r1.example")  # known: not noted again, so r1 stays the oldest host
    meet(origins, url(3), "r3.example")
    assert not origins.spoke_https_to("r1.example")
    assert origins.spoke_https_to("r2.example")


# -- properties over random event sequences --------------------------------------

events = st.sampled_from(list(EVENTS.values()))


@settings(max_examples=150, deadline=None)
@given(st.lists(events, max_size=30))
def test_random_event_sequences_keep_the_invariants(seq: list[Event]) -> None:
    current = fresh()
    left_first_contact = False
    for event in seq:
        before, current = current, transition(current, event)
        assert isinstance(current.phase, Phase)
        # The challenge held matches the phase.
        if current.phase in (Phase.NEW, Phase.PROBING, Phase.OPEN):
            assert current.challenge is None
        else:
            assert current.challenge is not None
            assert current.challenge.scheme == current.phase.value
            assert current.registry
        # A Basic challenge never moves BEARER to BASIC.
        if before.phase is Phase.BEARER:
            assert current.phase is Phase.BEARER
        # Only ProbeSent from NEW yields PROBING.
        if current.phase is Phase.PROBING and before.phase is not Phase.PROBING:
            assert before.phase is Phase.NEW
            assert isinstance(event, ProbeSent)
        # An answered origin never holds a burst back again.
        if not before.holds_back:
            left_first_contact = True
        if left_first_contact:
            assert not current.holds_back
        # What was learnt is never forgotten.
        assert current.registry >= before.registry
        assert current.narrow_only >= before.narrow_only
        assert current.ahead_worked >= before.ahead_worked
        assert current.ahead_refused >= before.ahead_refused


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), events), max_size=40), st.integers(1, 4))
def test_origins_stay_bounded_and_consistent(seq: list[tuple[int, Event]], bound: int) -> None:
    origins = Origins(bound)
    for n, event in seq:
        new = origins.apply(meet(origins, url(n), f"r{n}.example"), event)
        assert origins.get(url(n)) is new
        assert len(origins) <= bound
        assert len(list(origins)) == len(origins)


def test_a_state_replaced_or_evicted_is_told_and_nothing_else() -> None:
    # The core's hot path compares one generation number instead of searching the
    # table: every change that can end a remembered decision must be told.
    told: list[None] = []
    origins = Origins(2, on_change=lambda: told.append(None))
    st_ = meet(origins, url(1), "r1.example")
    meet(origins, url(2), "r2.example")
    meet(origins, url(1), "r1.example")  # met again: no change
    assert told == []
    st_ = origins.apply(st_, RegistryCallSeen())
    assert len(told) == 1  # replaced
    assert origins.apply(st_, RegistryCallSeen()) is st_
    assert len(told) == 1  # the same lesson again: no change
    meet(origins, url(3), "r3.example")  # evicts r2
    assert len(told) == 2
    origins.apply(fresh(), ProbeSent())  # an evicted origin back, and another out
    assert len(told) == 4
