"""Refused credentials of a credential helper, asked for again (AuthCore.renewed).

Plain values, as in test_core_flow.py: the tiny driver here answers each
LookupCredentials from a list of answers (one per lookup, so a test says what
the helper hands out each time it runs) and records every lookup, token call
and send. The rules proved: only a helper's answer is asked for again; at most
once per (origin, namespace) per interval; requests refused meanwhile share
that one lookup; the request is retried once; a fresh answer refused too ends
the request (no loop).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from test_core_flow import (
    BASIC,
    BASIC_CHALLENGE,
    BASIC_LINE,
    CREDS,
    FOREIGN_REALM,
    HOST,
    PULL_A,
    REALM,
    REG,
    bearer_challenge,
    bearer_core,
    get,
    ok,
)

from aociauth.config import ConfigEntry
from aociauth.core import (
    AuthCore,
    Fail,
    FetchKey,
    FetchToken,
    FlowPolicy,
    LookupAnswer,
    LookupCredentials,
    Pass,
    PrepareResend,
    Reply,
    RequestFacts,
    Resend,
    Send,
    TokenCall,
    TokenReply,
)
from aociauth.core.origin import Answered
from aociauth.core.rules import basic_authorization
from aociauth.errors import TokenServerError
from aociauth.stats import AuthStats

RENEWED = ConfigEntry(username="alice", password="renewed")
RENEWED_BASIC = basic_authorization("alice", "renewed")
REFUSED = TokenReply(401)


def helper(entry: ConfigEntry) -> LookupAnswer:
    return LookupAnswer(entry, from_helper=True)


@dataclass
class Script:
    """What the config answers (one item per lookup) and what the token server accepts."""

    answers: list[object]
    #: Basic values the token server refuses (401); any other gets a token named after it.
    refused: set[str] = field(default_factory=set)
    lookups: list[LookupCredentials] = field(default_factory=list)
    calls: list[TokenCall] = field(default_factory=list)

    def lookup(self, effect: LookupCredentials) -> object:
        self.lookups.append(effect)
        return self.answers.pop(0)

    def token(self, call: TokenCall) -> TokenReply:
        self.calls.append(call)
        if call.authorization in self.refused:
            return REFUSED
        return ok("T-" + ("renewed" if call.authorization == RENEWED_BASIC else "first"))


@dataclass
class Run:
    outcome: object
    effects: list[object]

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]


def run_fetch(core: AuthCore, effect: FetchToken, script: Script, now: float) -> object:
    flow = core.fetch_flow(effect.job)
    value: TokenReply | None = None
    try:
        while True:
            try:
                call = core.resume(flow, value, now)
            except StopIteration as stop:
                return stop.value
            value = script.token(call)
    finally:
        core.fetch_ended(effect.key)


def drive(
    core: AuthCore,
    facts: RequestFacts,
    script: Script,
    replies: Iterable[Reply] = (Reply(200),),
    now: float = 0.0,
) -> Run:
    flow = core.request_flow(facts)
    queue = list(replies)
    effects: list[object] = []
    value: object = None
    for _ in range(50):
        try:
            effect = core.resume(flow, value, now)
        except StopIteration as stop:
            return Run(stop.value, effects)
        effects.append(effect)
        value = None
        if isinstance(effect, LookupCredentials):
            value = script.lookup(effect)
        elif isinstance(effect, Send | Resend):
            value = queue.pop(0)
        elif isinstance(effect, FetchToken):
            value = run_fetch(core, effect, script, now)
    raise AssertionError("a request flow that never ends")


def basic_core(policy: FlowPolicy | None = None) -> AuthCore:
    core = AuthCore(policy, AuthStats())
    core.origins.apply(core.origin_of(REG), Answered(BASIC_CHALLENGE))
    return core


# -- Bearer: the token server refuses the helper's credentials ----------------------


def test_a_refused_helper_credential_is_asked_for_again_and_the_fetch_retried_once() -> None:
    core = bearer_core()
    script = Script([helper(CREDS), helper(RENEWED)], refused={BASIC})
    run = drive(core, get(), script)
    assert [lk.renewal for lk in script.lookups] == [0, 1]
    assert script.lookups[1].namespace == ""
    assert script.lookups[1].host == HOST
    assert [c.authorization for c in script.calls] == [BASIC, RENEWED_BASIC]
    assert run.of(Send) == [Send("Bearer T-renewed")]
    assert isinstance(run.outcome, Pass)
    assert core.stats.credentials_renewed == 1
    # The renewed identity is the one every later request uses: no lookup, no refusal.
    later = drive(core, get("b"), script)
    assert script.lookups[2:] == []
    assert [c.authorization for c in script.calls[2:]] == [RENEWED_BASIC]
    assert later.of(Send) == [Send("Bearer T-renewed")]


def test_a_403_from_the_token_server_renews_a_helpers_credentials_too() -> None:
    core = bearer_core()
    script = Script([helper(CREDS), helper(RENEWED)])

    def forbidden(call: TokenCall) -> TokenReply:
        script.calls.append(call)
        return TokenReply(403) if call.authorization == BASIC else ok("T-renewed")

    script.token = forbidden  # type: ignore[method-assign]
    run = drive(core, get(), script)
    assert [lk.renewal for lk in script.lookups] == [0, 1]
    assert [c.authorization for c in script.calls] == [BASIC, RENEWED_BASIC]
    assert run.of(Send) == [Send("Bearer T-renewed")]


def test_credentials_refused_after_the_challenge_are_renewed_and_the_fetch_retried() -> None:
    core = bearer_core(FlowPolicy(authorize_ahead=False))
    script = Script([helper(CREDS), helper(RENEWED)], refused={BASIC})
    replies = [Reply(401, (bearer_challenge_line(),)), Reply(200)]
    run = drive(core, get("a"), script, replies)
    assert run.of(Send) == [Send(None)]
    assert [c.authorization for c in script.calls] == [BASIC, RENEWED_BASIC]
    assert run.of(Resend) == [Resend("Bearer T-renewed")]
    assert isinstance(run.outcome, Pass)
    first, again = run.of(FetchToken)
    renewed = again.job.identity
    assert renewed.basic == RENEWED_BASIC
    # The same token request as the first, as the renewed identity.
    assert again.key == FetchKey(renewed.partition, REALM, "reg", PULL_A)
    assert again.key == replace(first.key, partition=renewed.partition)
    assert (again.job.origin.url, again.job.challenge) == (REG, bearer_challenge())
    assert (again.job.required, again.job.wanted) == (PULL_A, PULL_A)


def test_a_file_entry_is_never_asked_for_again() -> None:
    for answer in (CREDS, LookupAnswer(CREDS, from_helper=False)):
        core = bearer_core()
        script = Script([answer], refused={BASIC})
        run = drive(core, get(), script, replies=[Reply(401, (bearer_challenge_line(),))])
        assert [lk.renewal for lk in script.lookups] == [0]
        assert isinstance(run.outcome, Fail)
        assert isinstance(run.outcome.error, TokenServerError)
        assert run.outcome.error.status == 401
        assert core.stats.credentials_renewed == 0


def bearer_challenge_line() -> str:
    ch = bearer_challenge()
    return "Bearer " + ", ".join(f'{k}="{v}"' for k, v in ch.params.items())


def test_a_refusal_of_an_anonymous_request_renews_nothing() -> None:
    # The realm is not trusted with credentials: the token request went anonymously,
    # so its refusal says nothing of the helper's credentials.
    core = bearer_core(challenge=bearer_challenge(realm=FOREIGN_REALM))
    script = Script([helper(CREDS)], refused={""})

    def anonymous_refused(call: TokenCall) -> TokenReply:
        script.calls.append(call)
        return REFUSED

    script.token = anonymous_refused  # type: ignore[method-assign]
    line = f'Bearer realm="{FOREIGN_REALM}",service="reg",scope="repository:a:pull"'
    run = drive(core, get(), script, replies=[Reply(401, (line,))])
    assert [c.authorization for c in script.calls] == [None, None]
    assert [lk.renewal for lk in script.lookups] == [0]
    assert isinstance(run.outcome, Fail)


def test_a_fresh_answer_refused_too_ends_the_request_without_a_loop() -> None:
    core = bearer_core()
    script = Script([helper(CREDS), helper(RENEWED)], refused={BASIC, RENEWED_BASIC})
    run = drive(core, get(), script, replies=[Reply(401, (bearer_challenge_line(),))])
    assert isinstance(run.outcome, Fail)
    assert [lk.renewal for lk in script.lookups] == [0, 1]
    # Ahead: the old one, the renewed one; after the challenge: the renewed one, once.
    assert [c.authorization for c in script.calls] == [BASIC, RENEWED_BASIC, RENEWED_BASIC]
    assert core.stats.credentials_renewed == 1


def test_the_same_answer_again_is_not_retried() -> None:
    core = bearer_core()
    script = Script([helper(CREDS), helper(CREDS)], refused={BASIC})
    run = drive(core, get(), script, replies=[Reply(401, (bearer_challenge_line(),))])
    assert isinstance(run.outcome, Fail)
    assert [lk.renewal for lk in script.lookups] == [0, 1]
    # Ahead, then the challenge's fetch: no retry with the very credentials refused.
    assert [c.authorization for c in script.calls] == [BASIC, BASIC]


@pytest.mark.parametrize("start", [0.0, 1000.0])
def test_at_most_once_per_registry_per_interval(start: float) -> None:
    core = bearer_core(FlowPolicy(helper_rerun_interval=60.0))
    script = Script([helper(CREDS)] * 3, refused={BASIC})
    challenge = [Reply(401, (bearer_challenge_line(),))]
    for now, repo in ((0.0, "a"), (10.0, "b"), (59.0, "c")):
        run = drive(core, get(repo), script, challenge, now=start + now)
        assert isinstance(run.outcome, Fail)
    assert [lk.renewal for lk in script.lookups] == [0, 1]
    assert isinstance(drive(core, get("d"), script, challenge, now=start + 60.0).outcome, Fail)
    assert [lk.renewal for lk in script.lookups] == [0, 1, 2]
    assert core.stats.credentials_renewed == 2


def test_requests_refused_meanwhile_share_the_one_lookup() -> None:
    core = bearer_core()
    st = core.origin_of(REG)
    old = core.adopt(st, "", helper(CREDS))
    first, second = core.renewed(st, old), core.renewed(st, old)
    a = first.send(None)
    b = second.send(None)
    assert isinstance(a, LookupCredentials)
    assert isinstance(b, LookupCredentials)
    assert a.renewal == b.renewal == 1  # one number: the adapter runs one lookup
    assert core.stats.credentials_renewed == 1
    new = _finish(first, helper(RENEWED))
    assert new is not None
    assert new.basic == RENEWED_BASIC
    assert _finish(second, helper(RENEWED)) == new
    # A request refused with the old identity after that retries with the new one at once.
    third = core.renewed(st, old)
    assert _finish(third, None) == new


def _finish(gen: Any, value: object) -> Any:
    try:
        gen.send(value)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("renewed yielded twice")


def test_requests_refused_meanwhile_share_an_answer_that_changed_nothing() -> None:
    core = bearer_core()
    st = core.origin_of(REG)
    old = core.adopt(st, "", helper(CREDS))
    first, second = core.renewed(st, old), core.renewed(st, old)
    assert isinstance(first.send(None), LookupCredentials)
    assert isinstance(second.send(None), LookupCredentials)  # sharing the first's lookup
    # The helper hands out the very credentials refused: nothing to retry with, for either.
    assert _finish(first, helper(CREDS)) is None
    assert _finish(second, helper(CREDS)) is None


def test_the_log_tells_a_renewal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="aociauth")
    core = bearer_core()
    st = core.origin_of(REG)
    gen = core.renewed(st, core.adopt(st, "", helper(CREDS)))
    assert isinstance(gen.send(None), LookupCredentials)
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "aociauth"] == [
        ("DEBUG", "credentials for reg.example were refused; asking the helper again")
    ]


def test_an_abandoned_renewal_still_counts_for_the_interval() -> None:
    core = bearer_core()
    st = core.origin_of(REG)
    old = core.adopt(st, "", helper(CREDS))
    gen = core.renewed(st, old)
    assert isinstance(gen.send(None), LookupCredentials)
    gen.close()  # the request was cancelled, or the helper failed
    core.now = 30.0
    assert _finish(core.renewed(st, old), None) is None
    core.now = 61.0
    again = core.renewed(st, old)
    lookup = again.send(None)
    assert isinstance(lookup, LookupCredentials)
    assert lookup.renewal == 2


# -- Basic: the registry refuses the helper's credentials ---------------------------


def test_ecr_403_to_a_helpers_basic_credentials_renews_and_resends_once() -> None:
    core = basic_core()
    script = Script([helper(CREDS), helper(RENEWED)])
    run = drive(core, get(), script, replies=[Reply(403), Reply(200)])
    assert run.of(Send) == [Send(BASIC)]
    assert run.of(Resend) == [Resend(RENEWED_BASIC)]
    assert len(run.of(PrepareResend)) == 1
    assert [lk.renewal for lk in script.lookups] == [0, 1]
    assert isinstance(run.outcome, Pass)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refusal_of_basic_credentials_after_the_challenge_renews_them(status: int) -> None:
    core = AuthCore(None, AuthStats())
    core.origins.apply(core.origin_of(REG), Answered())
    script = Script([helper(CREDS), helper(RENEWED)])
    replies = [Reply(401, (BASIC_LINE,)), Reply(status, (BASIC_LINE,)), Reply(200)]
    run = drive(core, get(), script, replies=replies)
    assert run.of(Send) == [Send(None)]
    assert run.of(Resend) == [Resend(BASIC), Resend(RENEWED_BASIC)]
    assert len(run.of(PrepareResend)) == 2
    assert isinstance(run.outcome, Pass)


def test_refused_renewed_basic_credentials_are_passed_back_as_they_are() -> None:
    core = basic_core()
    script = Script([helper(CREDS), helper(RENEWED)])
    run = drive(core, get(), script, replies=[Reply(403), Reply(403)])
    assert run.of(Resend) == [Resend(RENEWED_BASIC)]
    assert isinstance(run.outcome, Pass)
    # And a second request within the interval sends the renewed ones without asking.
    run = drive(core, get(), script, replies=[Reply(403)])
    assert run.of(Send) == [Send(RENEWED_BASIC)]
    assert run.of(Resend) == []
    assert len(script.lookups) == 2


@pytest.mark.parametrize(("status", "counted"), [(401, 2), (403, 1), (200, 1)])
def test_the_answer_to_renewed_basic_credentials_is_counted_when_it_is_a_401(
    status: int, counted: int
) -> None:
    core = basic_core()
    script = Script([helper(CREDS), helper(RENEWED)])
    run = drive(core, get(), script, replies=[Reply(401, (BASIC_LINE,)), Reply(status)])
    assert run.of(Resend) == [Resend(RENEWED_BASIC)]
    assert isinstance(run.outcome, Pass)
    assert core.stats.responses_401 == counted


def test_a_403_to_a_files_basic_credentials_is_passed_back() -> None:
    core = basic_core()
    script = Script([CREDS])
    run = drive(core, get(), script, replies=[Reply(403)])
    assert run.of(Resend) == []
    assert [lk.renewal for lk in script.lookups] == [0]
    assert isinstance(run.outcome, Pass)


def test_the_callers_own_authorization_is_never_renewed() -> None:
    core = basic_core()
    script = Script([helper(CREDS)])
    run = drive(core, get(callers_authorization=True), script, replies=[Reply(403)])
    assert run.of(Resend) == []
    assert [lk.renewal for lk in script.lookups] == [0]


# -- a changed config ----------------------------------------------------------------


def test_forgotten_credentials_are_looked_up_again_and_their_tokens_kept() -> None:
    core = bearer_core()
    script = Script([CREDS, CREDS, RENEWED])
    drive(core, get(), script)
    assert len(script.calls) == 1
    core.forget_credentials()
    # The same entry again: its cached token still serves.
    run = drive(core, get(), script)
    assert [lk.renewal for lk in script.lookups] == [0, 0]
    assert len(script.calls) == 1
    assert run.of(Send) == [Send("Bearer T-first")]
    core.forget_credentials()
    run = drive(core, get(), script)
    assert [c.authorization for c in script.calls] == [BASIC, RENEWED_BASIC]
    assert run.of(Send) == [Send("Bearer T-renewed")]


def test_a_request_refused_with_credentials_replaced_meanwhile_retries_with_the_new() -> None:
    # A docker login while the request was out: the file's new entry is adopted by
    # another request; this one is retried with it, without a lookup of its own.
    core = bearer_core()
    st = core.origin_of(REG)
    old = core.adopt(st, "", CREDS)
    core.forget_credentials()
    new = core.adopt(st, "", RENEWED)
    assert _finish(core.renewed(st, old), None) == new
