"""Fetching ahead of the challenge, learnt per origin (issue 11 item 4), with plain values.

After one token fetched ahead is refused, no token is fetched ahead at that
origin again; until one has been granted, one fetch ahead goes at a time and
other requests that would fetch their own wait for it (they join its fetch).
"""

from __future__ import annotations

from typing import Any

import pytest
from test_core_flow import (
    CREDS,
    PULL_B,
    bearer_challenge,
    bearer_core,
    bearer_line,
    drive,
    get,
    ok,
    run_fetch,
)
from test_core_flow import start as fetch_after
from yarl import URL

from aociauth.challenge import Challenge
from aociauth.config import ConfigEntry
from aociauth.core import (
    AuthCore,
    Fail,
    FetchToken,
    FlowPolicy,
    LookupCredentials,
    Pass,
    Reply,
    RequestFacts,
    Send,
)
from aociauth.core.origin import Answered, origin_key
from aociauth.errors import ChallengeError, TokenServerError
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


def start(
    core: AuthCore, facts: RequestFacts, entry: ConfigEntry = CREDS
) -> tuple[Any, FetchToken]:
    """A request flow run up to its fetch ahead, left there (its fetch in flight)."""
    flow = core.request_flow(facts)
    effect = core.resume(flow, None, 0.0)
    while not isinstance(effect, FetchToken):
        effect = core.resume(flow, entry if isinstance(effect, LookupCredentials) else None, 0.0)
    return flow, effect


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


def test_every_request_that_would_fetch_its_own_waits_for_the_first_fetch_ahead() -> None:
    core = bearer_core()
    _, trial = start(core, get("a"))
    waits = [start(core, get(repo))[1] for repo in ("b", "c")]
    assert [w.key for w in waits] == [trial.key, trial.key]
    assert core.stats.ahead_waits == 2


def test_a_fetch_after_a_401_is_no_first_fetch_ahead_to_wait_for() -> None:
    # Nothing is known of the first request's scope: no fetch ahead, its 401 fetches.
    core = bearer_core(FlowPolicy(infer_scopes=False, coalesce_token_requests=1))
    after_401 = fetch_after(core, get("a"), Reply(401, (bearer_line(),)))
    _, ahead = start(core, get("b", info_scope=PULL_B))
    assert ahead.key.scope == PULL_B  # its own fetch, at once
    assert core.in_flight() == {after_401.key, ahead.key}
    assert core.stats.ahead_waits == 0


def test_without_authorize_ahead_a_refresh_tokens_fetch_ahead_is_no_trial() -> None:
    # The original's fetch ahead with a refresh token is not the policy's: nobody waits
    # for it, and it teaches the origin nothing.
    core = bearer_core(FlowPolicy(authorize_ahead=False, coalesce_token_requests=1))
    rt = ConfigEntry(refresh_token="RT")
    a_flow, first = start(core, get("a"), rt)
    _, second = start(core, get("b"), rt)
    assert second.key.scope == PULL_B
    assert core.stats.ahead_waits == 0
    token, _ = run_fetch(core, first.job, [ok("T-a")])
    core.fetch_ended(first.key)
    assert core.resume(a_flow, token, 0.0) == Send("Bearer T-a")
    assert not origin(core).ahead_worked


def test_a_request_a_realmless_first_fetch_ahead_serves_joins_it_and_fails_as_it_does() -> None:
    # A challenge without a realm is keyed by "" (see test_core_flow): the request
    # joins the fetch in flight, whose ChallengeError it shares.
    bare = Challenge("bearer", {"service": "reg", "scope": "repository:a:pull"})
    core = bearer_core(challenge=bare)
    a_flow, trial = start(core, get("a"))
    b_flow, same = start(core, get("a"))
    assert same.key == trial.key
    assert core.stats.ahead_waits == 0
    error, _ = run_fetch(core, trial.job, [])
    assert isinstance(error, ChallengeError)
    core.fetch_ended(trial.key)
    for flow in (a_flow, b_flow):
        with pytest.raises(StopIteration) as stop:
            core.resume(flow, error, 0.0)
        assert stop.value.value == Fail(error)


def test_first_fetches_ahead_are_kept_for_max_origins_origins() -> None:
    core = AuthCore(FlowPolicy(max_origins=2))
    bases = [URL(f"https://r{n}.example") for n in (1, 2, 3)]

    def trial_at(base: URL) -> FetchToken:
        core.origins.apply(core.origin_of(base), Answered(bearer_challenge(realm=f"{base}/token")))
        return start(core, get("a", base=base))[1]

    trials = [trial_at(base) for base in bases[:2]]
    # Both origins' first fetches ahead hold their other requests back.
    for base, trial in zip(bases[:2], trials, strict=True):
        assert start(core, get("b", base=base))[1].key == trial.key
    assert core.stats.ahead_waits == 2
    trial_at(bases[2])
    assert set(core._trials) == {origin_key(bases[1]), origin_key(bases[2])}
