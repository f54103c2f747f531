"""Fetching ahead of the challenge, learnt per origin (issue 11 item 4), with plain values.

After one token fetched ahead is refused, no token is fetched ahead at that
origin again; until one has been granted, one fetch ahead goes at a time and
other requests that would fetch their own wait for it (they join its fetch).
"""

from __future__ import annotations

from typing import Any

from test_core_flow import CREDS, bearer_core, drive, get, ok, run_fetch

from aociauth.core import (
    AuthCore,
    FetchToken,
    FlowPolicy,
    LookupCredentials,
    Pass,
    RequestFacts,
    Send,
)
from aociauth.errors import TokenServerError
from aociauth.tokens import AccessToken

HOST = "reg.example"


def refused() -> TokenServerError:
    return TokenServerError("denied", registry=HOST, step="token", status=401)


def origin(core: AuthCore) -> Any:
    return core.origins.get(get().url)


def test_after_a_refused_fetch_ahead_no_token_is_fetched_ahead_there_again() -> None:
    core = bearer_core()
    first = drive(core, get("a"), fetch=lambda _: refused())
    assert len(first.of(FetchToken)) == 1
    assert first.of(Send) == [Send(None)]
    assert origin(core).ahead_refused
    later = drive(core, get("b"), fetch=lambda _: refused())
    assert later.of(FetchToken) == []
    assert later.of(Send) == [Send(None)]
    assert (core.stats.fetches_ahead, core.stats.fetches_ahead_failed) == (1, 1)


def test_a_granted_fetch_ahead_is_remembered_and_fetches_go_on_ahead() -> None:
    core = bearer_core()
    drive(core, get("a"), tokens=[ok("T-a")])
    assert origin(core).ahead_worked
    run = drive(core, get("b"), tokens=[ok("T-b")])
    assert run.of(Send) == [Send("Bearer T-b")]
    assert core.stats.ahead_waits == 0


def start(core: AuthCore, facts: RequestFacts) -> tuple[Any, FetchToken]:
    """A request flow run up to its fetch ahead, left there (its fetch in flight)."""
    flow = core.request_flow(facts)
    effect = core.resume(flow, None, 0.0)
    while not isinstance(effect, FetchToken):
        effect = core.resume(flow, _answer(effect), 0.0)
    return flow, effect


def _answer(effect: object) -> object:
    return CREDS if isinstance(effect, LookupCredentials) else None


def test_requests_wait_for_the_first_fetch_ahead_and_go_without_when_it_is_refused() -> None:
    core = bearer_core()
    _, trial = start(core, get("a"))
    flow, waited = start(core, get("b"))
    # b joins a's fetch (its key and job) instead of asking the server for its own.
    assert (waited.key, waited.job) == (trial.key, trial.job)
    assert core.stats.ahead_waits == 1
    core.fetch_ended(trial.key)  # a's fetch was refused...
    assert core.resume(flow, refused(), 0.0) == Send(None)  # ...so b goes without a token
    assert core.stats.fetches_ahead == 1


def test_requests_wait_for_the_first_fetch_ahead_and_fetch_their_own_once_granted() -> None:
    core = bearer_core()
    a_flow, trial = start(core, get("a"))
    b_flow, waited = start(core, get("b"))
    assert waited.key == trial.key
    token, _ = run_fetch(core, trial.job, [ok("T-a")])
    assert isinstance(token, AccessToken)
    core.fetch_ended(trial.key)
    assert core.resume(a_flow, token, 0.0) == Send("Bearer T-a")
    assert origin(core).ahead_worked
    own = core.resume(b_flow, token, 0.0)
    assert isinstance(own, FetchToken)
    assert own.key != trial.key
    assert str(own.key.scope) == "repository:b:pull"


def test_a_request_the_first_fetch_ahead_serves_joins_it_without_waiting() -> None:
    core = bearer_core()
    _, trial = start(core, get("a"))
    _, same = start(core, get("a"))
    assert same.key == trial.key
    assert core.stats.ahead_waits == 0


def test_a_trial_that_ended_is_not_waited_for() -> None:
    core = bearer_core()
    _, trial = start(core, get("a"))
    core.fetch_ended(trial.key)  # abandoned: its request was cancelled
    _, own = start(core, get("b"))
    assert own.key != trial.key
    assert core.stats.ahead_waits == 0


def test_the_original_policy_never_waits_nor_stops() -> None:
    core = bearer_core(FlowPolicy(authorize_ahead=False))
    run = drive(core, get("a"), fetch=lambda _: refused())
    assert run.of(FetchToken) == []
    assert isinstance(run.outcome, Pass)
    assert not origin(core).ahead_refused
