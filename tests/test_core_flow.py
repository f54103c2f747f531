"""The core's request and token-fetch flows (aociauth.core.flow), driven by hand.

Plain values only: no server, no event loop. :func:`drive` is a tiny
synchronous adapter: it answers each effect a flow yields from a script
(credentials, registry replies, token-server replies) and records what was
yielded, so each test states a decision as "these effects, then this outcome".
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from yarl import URL

from aociauth.challenge import Challenge
from aociauth.config import ConfigEntry
from aociauth.core import (
    AuthCore,
    AwaitProbe,
    Deny,
    Fail,
    FetchJob,
    FetchKey,
    FetchToken,
    FlowPolicy,
    Identity,
    LookupAnswer,
    LookupCredentials,
    Pass,
    Prepared,
    PrepareResend,
    RefreshInBackground,
    Reply,
    Requester,
    RequestFacts,
    Resend,
    Send,
    TokenCall,
    TokenReply,
)
from aociauth.core.flow import HOT_ENTRIES, How
from aociauth.core.origin import Answered, FetchAheadWorked, Phase, ProbeSent, WideScopeRefused
from aociauth.core.rules import OAUTH_CLIENT_ID, REFUSALS, basic_authorization
from aociauth.errors import (
    ChallengeError,
    OCIAuthError,
    RealmPolicyError,
    TokenResponseError,
    TokenServerError,
)
from aociauth.realm import RealmPolicy
from aociauth.scope import Scope, parse_scope, unlimited_scope
from aociauth.stats import AuthStats
from aociauth.tokens import AccessToken

REG = URL("https://reg.example")
HOST = "reg.example"
REALM = "https://reg.example/token"  # the registry's own host: trusted with credentials
FOREIGN_REALM = "https://auth.other.test/token"  # asked anonymously
CREDS = ConfigEntry(username="alice", password="secret")
BASIC = basic_authorization("alice", "secret")
NO_CREDS = ConfigEntry()
PULL_A = parse_scope("repository:a:pull")
PUSH_A = parse_scope("repository:a:pull,push")
PULL_B = parse_scope("repository:b:pull")


def bearer_line(scope: str = "repository:a:pull", realm: str = REALM, **extra: str) -> str:
    params = {"realm": realm, "service": "reg", "scope": scope, **extra}
    return "Bearer " + ", ".join(f'{k}="{v}"' for k, v in params.items() if v)


def bearer_challenge(scope: str = "repository:a:pull", realm: str = REALM) -> Challenge:
    return Challenge("bearer", {"realm": realm, "service": "reg", "scope": scope})


BASIC_LINE = 'Basic realm="reg"'
BASIC_CHALLENGE = Challenge("basic", {"realm": "reg"})


def get(repo: str = "a", base: URL = REG, **facts: Any) -> RequestFacts:
    return RequestFacts("GET", base.with_path(f"/v2/{repo}/manifests/latest"), **facts)


def put(repo: str = "a", base: URL = REG, **facts: Any) -> RequestFacts:
    return RequestFacts("PUT", base.with_path(f"/v2/{repo}/manifests/latest"), **facts)


def jwt(*access: tuple[str, str, list[str]]) -> str:
    """A token whose payload is a JSON ``access`` claim (unsigned: only the claim is read)."""
    claims = {"access": [{"type": t, "name": n, "actions": a} for t, n, a in access]}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJub25lIn0.{payload}.c2ln"


def ok(token: str = "T1", expires_in: float = 300, refresh_token: str = "") -> TokenReply:
    body: dict[str, Any] = {"token": token, "expires_in": expires_in}
    if refresh_token:
        body["refresh_token"] = refresh_token
    return TokenReply(200, json.dumps(body).encode())


# -- the driver ---------------------------------------------------------------


@dataclass
class Run:
    """What a flow did: its outcome, the effects it yielded and the token calls made."""

    outcome: object
    effects: list[object] = field(default_factory=list)
    calls: list[TokenCall] = field(default_factory=list)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]

    @property
    def sent(self) -> Send:
        (send,) = self.of(Send)
        return send


TokenScript = list[TokenReply] | Callable[[TokenCall], TokenReply]


def run_fetch(
    core: AuthCore, job: FetchJob, tokens: TokenScript, now: float = 0.0
) -> tuple[AccessToken | OCIAuthError, list[TokenCall]]:
    """Run a fetch flow against a scripted token server."""
    flow = core.fetch_flow(job)
    calls: list[TokenCall] = []
    value: TokenReply | None = None
    for _ in range(10):
        try:
            call = core.resume(flow, value, now)
        except StopIteration as stop:
            return stop.value, calls
        calls.append(call)
        value = tokens(call) if callable(tokens) else tokens.pop(0)
    raise AssertionError("a fetch flow that never ends")


def drive(
    core: AuthCore,
    facts: RequestFacts,
    *,
    entry: ConfigEntry | LookupAnswer = CREDS,
    replies: Iterable[Reply] = (Reply(200),),
    tokens: TokenScript | None = None,
    now: float = 0.0,
    fetch: Callable[[FetchToken], object] | None = None,
    on_await: Callable[[AwaitProbe], None] | None = None,
    clock: list[float] | None = None,
) -> Run:
    """Run one request flow to its outcome, answering each effect from the script.

    ``fetch`` answers FetchToken itself; otherwise the core's own fetch flow runs
    against ``tokens``. ``clock`` (a one-item list) is read at every step, so a
    hook can move time on.
    """
    flow = core.request_flow(facts)
    queue = list(replies)
    token_script: TokenScript = [] if tokens is None else tokens
    run = Run(None)
    value: object = None
    for _ in range(50):
        t = clock[0] if clock is not None else now
        try:
            effect = core.resume(flow, value, t)
        except StopIteration as stop:
            run.outcome = stop.value
            return run
        run.effects.append(effect)
        value = None
        if isinstance(effect, LookupCredentials):
            value = entry
        elif isinstance(effect, Send | Resend):
            value = queue.pop(0)
        elif isinstance(effect, AwaitProbe):
            assert on_await is not None, "unexpected AwaitProbe"
            on_await(effect)
        elif isinstance(effect, FetchToken):
            if fetch is not None:
                value = fetch(effect)
            else:
                value, calls = run_fetch(core, effect.job, token_script, t)
                run.calls += calls
            core.fetch_ended(effect.key)
        else:
            assert isinstance(effect, PrepareResend | RefreshInBackground), effect
    raise AssertionError("a request flow that never ends")


def bearer_core(
    policy: FlowPolicy | None = None,
    challenge: Challenge | None = None,
    base: URL = REG,
    stats: AuthStats | None = None,
) -> AuthCore:
    """A core that has met ``base`` and was challenged Bearer there."""
    core = AuthCore(policy, stats)
    st = core.origin_of(base)
    core.origins.apply(st, Answered(challenge or bearer_challenge()))
    return core


def basic_core(stats: AuthStats | None = None) -> AuthCore:
    core = AuthCore(None, stats)
    core.origins.apply(core.origin_of(REG), Answered(BASIC_CHALLENGE))
    return core


def open_core(policy: FlowPolicy | None = None, stats: AuthStats | None = None) -> AuthCore:
    core = AuthCore(policy, stats)
    core.origins.apply(core.origin_of(REG), Answered())
    return core


def identity(core: AuthCore, entry: ConfigEntry = CREDS, namespace: str = "") -> Identity:
    return core.adopt(core.origin_of(REG), namespace, entry)


def cache(
    core: AuthCore,
    scope: Scope,
    value: str = "cached",
    *,
    issued: float = 0.0,
    life: float = 1000.0,
    entry: ConfigEntry = CREDS,
) -> AccessToken:
    tok = AccessToken(value, scope, issued, issued + life)
    core.cache.put(identity(core, entry).partition, tok)
    return tok


def phase(core: AuthCore, base: URL = REG) -> Phase:
    st = core.origins.get(base)
    assert st is not None
    return st.phase


# -- what goes with a request ---------------------------------------------------


def test_a_cached_token_is_attached() -> None:
    core = bearer_core()
    cache(core, PULL_A)
    run = drive(core, get())
    assert run.sent == Send("Bearer cached")
    assert run.of(FetchToken) == []
    assert core.stats.cache_hits == 1
    assert core.stats.cache_misses == 0
    assert isinstance(run.outcome, Pass)


def test_a_cached_token_for_another_repository_is_not_attached() -> None:
    core = bearer_core(FlowPolicy(authorize_ahead=False))
    cache(core, PULL_B)
    run = drive(core, get("a"))
    assert run.sent == Send(None)
    assert core.stats.cache_misses == 1


def test_the_configs_access_token_is_attached_anywhere() -> None:
    core = open_core()
    run = drive(core, get(), entry=ConfigEntry(access_token="REGTOKEN"))
    assert run.sent == Send("Bearer REGTOKEN")
    assert core.stats.cache_hits == 1


@pytest.mark.parametrize(
    ("entry", "authorization"),
    [(CREDS, BASIC), (NO_CREDS, None), (ConfigEntry(username="alice"), None)],
)
def test_a_basic_origin_gets_basic(entry: ConfigEntry, authorization: str | None) -> None:
    core = basic_core()
    run = drive(core, get(), entry=entry)
    assert run.sent == Send(authorization)
    assert run.of(FetchToken) == []


def test_a_bearer_origin_with_a_known_scope_is_authorised_ahead() -> None:
    core = bearer_core()
    run = drive(core, get(), tokens=[ok("T1")])
    (fetch,) = run.of(FetchToken)
    assert fetch.key == FetchKey(0, REALM, "reg", PULL_A)
    assert run.sent == Send("Bearer T1")
    assert core.stats.fetches_ahead == 1
    assert core.stats.cache_misses == 1
    assert run.effects.index(fetch) < run.effects.index(run.sent)
    assert isinstance(run.outcome, Pass)


@pytest.mark.parametrize(
    ("policy", "facts", "entry", "ahead"),
    [
        # unknown scope: nothing to ask for ahead
        (FlowPolicy(infer_scopes=False), get(), CREDS, False),
        # known scope, but the caller turned authorising ahead off
        (FlowPolicy(authorize_ahead=False), get(), CREDS, False),
        # a refresh token is used ahead even without inference (as the original)
        (FlowPolicy(infer_scopes=False), get(), ConfigEntry(refresh_token="RT"), True),
        (FlowPolicy(authorize_ahead=False), get(), ConfigEntry(refresh_token="RT"), True),
        # the caller's RequestInfo is a known scope whatever the path says
        (
            FlowPolicy(infer_scopes=False),
            get(info_scope=PULL_A),
            CREDS,
            True,
        ),
    ],
)
def test_when_a_token_is_fetched_ahead(
    policy: FlowPolicy, facts: RequestFacts, entry: ConfigEntry, ahead: bool
) -> None:
    core = bearer_core(policy)
    run = drive(core, facts, entry=entry, tokens=[ok("T1")])
    assert len(run.of(FetchToken)) == int(ahead)
    assert run.sent == Send("Bearer T1" if ahead else None)
    assert core.stats.fetches_ahead == int(ahead)


@pytest.mark.parametrize("make", [open_core, lambda: AuthCore()])
def test_no_token_is_fetched_ahead_for_an_origin_that_never_asked_for_one(
    make: Callable[[], AuthCore],
) -> None:
    core = make()
    run = drive(core, get(), entry=ConfigEntry(refresh_token="RT"))
    assert run.of(FetchToken) == []
    assert run.sent.authorization is None


def test_a_fetch_ahead_asks_for_the_wanted_scope_too() -> None:
    core = bearer_core()
    run = drive(core, get("a", wanted=PULL_B), tokens=[ok()])
    (fetch,) = run.of(FetchToken)
    assert fetch.key.scope == PULL_A.union(PULL_B)
    assert fetch.job.required == PULL_A
    (call,) = run.calls
    assert sorted(call.url.query.getall("scope")) == ["repository:a:pull", "repository:b:pull"]


@pytest.mark.parametrize(
    ("wanted", "kept"),
    [
        (PULL_B, True),
        (parse_scope(" ".join(f"repository:r{i}:pull" for i in range(3))), False),  # items
        (parse_scope("repository:" + "x" * 64 + ":pull"), False),  # bytes
        (unlimited_scope(), False),  # never asked for on a caller's behalf
    ],
)
def test_the_wanted_scope_is_bounded(wanted: Scope, kept: bool) -> None:
    core = bearer_core(FlowPolicy(max_scope_items=2, max_scope_bytes=60))
    run = drive(core, get("a", wanted=wanted), tokens=[ok()])
    (fetch,) = run.of(FetchToken)
    assert fetch.key.scope == (PULL_A.union(wanted) if kept else PULL_A)


@pytest.mark.parametrize(
    ("status", "outcome", "ahead_failed"),
    [
        (401, "sent", 1),  # a refusal may be about the scope we guessed: the 401 decides
        (403, "sent", 1),
        (400, "sent", 1),
        (429, "fail", 0),  # already retried by the adapter
        (503, "fail", 0),
    ],
)
def test_a_failed_fetch_ahead(status: int, outcome: str, ahead_failed: int) -> None:
    core = bearer_core()
    error = TokenServerError("refused", registry=HOST, step="token", status=status)
    run = drive(core, get(), fetch=lambda _: error)
    assert core.stats.fetches_ahead_failed == ahead_failed
    if outcome == "sent":
        assert run.sent == Send(None)
        assert isinstance(run.outcome, Pass)
    else:
        assert run.of(Send) == []
        assert run.outcome == Fail(error)


def test_a_fetch_ahead_that_cannot_reach_the_token_server_fails() -> None:
    core = bearer_core()
    error = TokenServerError("unreachable", registry=HOST, step="token", status=None)
    run = drive(core, get(), fetch=lambda _: error)
    assert run.outcome == Fail(error)


def test_a_fetch_ahead_refused_by_policy_fails() -> None:
    core = bearer_core()
    error = RealmPolicyError("no", registry=HOST, step="realm")
    run = drive(core, get(), fetch=lambda _: error)
    assert run.outcome == Fail(error)
    assert core.stats.fetches_ahead_failed == 0


def test_a_refresh_token_fetch_ahead_that_is_refused_fails_without_authorize_ahead() -> None:
    # The original acquires ahead with a refresh token and fails if it cannot.
    entry = ConfigEntry(refresh_token="RT")
    error = TokenServerError("refused", registry=HOST, step="token", status=401)
    core = bearer_core(FlowPolicy(authorize_ahead=False))
    run = drive(core, get(), entry=entry, fetch=lambda _: error)
    assert run.outcome == Fail(error)
    core = bearer_core()
    run = drive(core, get(), entry=entry, fetch=lambda _: error)
    assert run.sent == Send(None)


# -- first contact ------------------------------------------------------------


def test_the_first_request_to_a_new_origin_is_the_probe() -> None:
    core = AuthCore()
    run = drive(core, get(), replies=[Reply(200)])
    assert run.effects[0] == LookupCredentials(REG, HOST, "", False)
    assert run.sent == Send(None, probe=True)
    assert phase(core) is Phase.OPEN
    assert core.stats.first_contact_waits == 0


def test_the_probe_holds_the_origin_in_probing_while_it_is_out() -> None:
    core = AuthCore()
    flow = core.request_flow(get())
    assert isinstance(core.resume(flow, None, 0.0), LookupCredentials)
    assert core.resume(flow, CREDS, 0.0) == Send(None, probe=True)
    assert phase(core) is Phase.PROBING


def test_a_burst_waits_for_the_probe_and_uses_what_it_taught() -> None:
    core = AuthCore()
    core.origins.apply(core.origin_of(REG), ProbeSent())

    def probe_answers(effect: AwaitProbe) -> None:
        assert effect == AwaitProbe(REG)
        core.origins.apply(core.origin_of(REG), Answered(bearer_challenge()))
        core.probe_ended(REG)

    run = drive(core, get(), on_await=probe_answers, tokens=[ok("T1")])
    assert len(run.of(AwaitProbe)) == 1
    assert run.sent == Send("Bearer T1")  # fetched ahead for the challenge the probe met
    assert core.stats.first_contact_waits == 1


def test_a_waiter_becomes_the_probe_when_the_probe_got_no_answer() -> None:
    core = AuthCore()
    core.origins.apply(core.origin_of(REG), ProbeSent())
    run = drive(core, get(), on_await=lambda _: core.probe_ended(REG))
    assert run.sent == Send(None, probe=True)
    assert core.stats.first_contact_waits == 1


def test_a_waiter_waits_again_while_the_origin_is_still_probing() -> None:
    core = AuthCore()
    core.origins.apply(core.origin_of(REG), ProbeSent())
    waits: list[AwaitProbe] = []

    def second_time_answered(effect: AwaitProbe) -> None:
        waits.append(effect)
        if len(waits) == 2:
            core.origins.apply(core.origin_of(REG), Answered())

    run = drive(core, get(), on_await=second_time_answered)
    assert len(run.of(AwaitProbe)) == 2
    assert run.sent == Send(None, probe=False)
    assert core.stats.first_contact_waits == 2


def test_no_probe_without_coalescing() -> None:
    core = AuthCore(FlowPolicy(coalesce_first_contact=False))
    core.origins.apply(core.origin_of(REG), ProbeSent())  # another request is out
    run = drive(core, get())
    assert run.of(AwaitProbe) == []
    assert run.sent == Send(None, probe=False)


def test_probe_ended_on_an_unknown_origin_is_harmless() -> None:
    core = AuthCore()
    core.probe_ended(REG)
    assert core.origins.get(REG) is None
    core.origin_of(REG)
    core.probe_ended(REG)
    assert phase(core) is Phase.NEW


def test_a_cdn_hop_to_a_never_challenged_origin_looks_nothing_up() -> None:
    core = AuthCore()
    cdn = URL("https://cdn.example/blobs/sha256/ab?sig=x")
    run = drive(core, RequestFacts("GET", cdn))
    assert run.of(LookupCredentials) == []
    assert run.of(AwaitProbe) == []
    assert run.sent == Send(None, probe=False)
    st = core.origins.get(cdn.origin())
    assert st is not None
    assert st.phase is Phase.OPEN
    assert not st.registry


def test_a_percent_encoded_path_is_read_decoded() -> None:
    core = bearer_core()
    url = REG.with_path("/v2/a%2Fb/manifests/latest", encoded=True)
    assert "%2F" in url.raw_path
    run = drive(core, RequestFacts("GET", url), tokens=[ok()])
    (fetch,) = run.of(FetchToken)
    assert fetch.key.scope == parse_scope("repository:a/b:pull")


def test_a_request_info_makes_any_path_a_registry_call() -> None:
    core = AuthCore()
    facts = RequestFacts("GET", REG.with_path("/custom"), info_scope=PULL_A)
    run = drive(core, facts)
    assert len(run.of(LookupCredentials)) == 1
    assert run.sent.probe


def test_an_api_call_with_inference_off_still_looks_credentials_up() -> None:
    core = AuthCore(FlowPolicy(infer_scopes=False))
    run = drive(core, get())
    assert len(run.of(LookupCredentials)) == 1


def test_a_non_api_path_on_a_registry_origin_looks_credentials_up() -> None:
    core = basic_core()
    run = drive(core, RequestFacts("GET", REG.with_path("/other")))
    assert len(run.of(LookupCredentials)) == 1
    assert run.sent == Send(BASIC)


@pytest.mark.parametrize(("spoke_https", "downgraded"), [(True, True), (False, False)])
def test_plain_http_to_a_host_spoken_to_over_https_is_a_downgrade(
    spoke_https: bool, downgraded: bool
) -> None:
    core = AuthCore()
    if spoke_https:
        core.origin_of(REG)
    run = drive(core, get(base=URL("http://reg.example")))
    (lookup,) = run.of(LookupCredentials)
    assert lookup.downgraded is downgraded
    assert lookup.origin == URL("http://reg.example")


def test_the_namespace_is_the_longest_config_key_covering_the_repository() -> None:
    core = AuthCore()
    asked: list[str] = []

    def lister(host: str) -> tuple[str, ...]:
        asked.append(host)
        return ("team/app", "team", "other")

    core.set_namespaces(lister)
    spaces = {
        "team/app": "team/app",
        "team/app/sub": "team/app",
        "team/tool": "team",
        "teamx/app": "",
        "team": "team",
        "x": "",
    }
    for repo, ns in spaces.items():
        run = drive(core, get(repo))
        # An identity already adopted for (origin, namespace) may need no lookup.
        assert [e.namespace for e in run.of(LookupCredentials)] in ([ns], []), repo
        fresh = AuthCore()
        fresh.set_namespaces(lister)
        assert drive(fresh, get(repo)).of(LookupCredentials)[0].namespace == ns, repo
    assert asked == [HOST] * (1 + len(spaces))  # asked once per origin (and per fresh core)


def test_no_namespace_without_a_single_repository() -> None:
    core = AuthCore()
    core.set_namespaces(lambda host: ("",))
    run = drive(core, RequestFacts("GET", REG.with_path("/v2/_catalog")))
    assert run.of(LookupCredentials)[0].namespace == ""


def test_known_namespaces_are_bounded_by_max_origins() -> None:
    core = AuthCore(FlowPolicy(max_origins=2))
    asked: list[str] = []
    core.set_namespaces(lambda host: (asked.append(host), ("a",))[1])
    for n in (1, 2, 3, 1):
        drive(core, get("a", base=URL(f"https://r{n}.example")))
    assert asked == ["r1.example", "r2.example", "r3.example", "r1.example"]


# -- the answer -----------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 404, 403, 500])
def test_an_answer_that_is_not_401_passes(status: int) -> None:
    core = bearer_core()
    cache(core, PULL_A)
    run = drive(core, get(), replies=[Reply(status)])
    assert isinstance(run.outcome, Pass)
    assert run.of(Resend) == []
    assert core.stats.responses_401 == 0
    assert core.stats.registry_429s == 0


def test_429_is_counted_and_passed() -> None:
    core = bearer_core()
    tok = cache(core, PULL_A)
    run = drive(core, get(), replies=[Reply(429, (bearer_line(),))])
    assert isinstance(run.outcome, Pass)
    assert run.of(FetchToken) == []
    assert run.of(Resend) == []
    assert core.stats.registry_429s == 1
    assert core.stats.responses_401 == 0
    assert core.cache.get(identity(core).partition, PULL_A, 0.0) is tok  # not forgotten


@pytest.mark.parametrize("lines", [(), ("Negotiate abc==",), ('Bearer realm="a", realm="b"',)])
def test_a_401_without_a_usable_challenge_passes(lines: tuple[str, ...]) -> None:
    core = open_core()
    run = drive(core, get(), replies=[Reply(401, lines)])
    assert isinstance(run.outcome, Pass)
    assert run.of(Resend) == []
    assert core.stats.responses_401 == 1
    assert phase(core) is Phase.OPEN


def test_a_basic_challenge_is_answered_with_basic() -> None:
    core = open_core()
    run = drive(core, get(), replies=[Reply(401, (BASIC_LINE,)), Reply(200)])
    assert run.effects[-2:] == [PrepareResend(), Resend(BASIC)]
    assert isinstance(run.outcome, Pass)
    assert phase(core) is Phase.BASIC
    assert core.stats.retries_after_401 == 1
    assert core.stats.responses_401 == 1


def test_basic_refused_again_passes_the_second_401() -> None:
    core = open_core()
    run = drive(core, get(), replies=[Reply(401, (BASIC_LINE,)), Reply(401, (BASIC_LINE,))])
    assert isinstance(run.outcome, Pass)
    assert core.stats.responses_401 == 2
    assert core.stats.rewritten_403 == 0


@pytest.mark.parametrize(
    ("make", "facts", "entry"),
    [
        (open_core, get(callers_authorization=True), CREDS),  # the caller's own
        (basic_core, get(), CREDS),  # Basic already went with it
        (open_core, get(), NO_CREDS),  # nothing to send
        (open_core, get(), ConfigEntry(username="alice")),
    ],
)
def test_a_basic_challenge_that_is_not_answered(
    make: Callable[[], AuthCore], facts: RequestFacts, entry: ConfigEntry
) -> None:
    core = make()
    run = drive(core, facts, entry=entry, replies=[Reply(401, (BASIC_LINE,))])
    assert isinstance(run.outcome, Pass)
    assert run.of(PrepareResend) == []
    assert run.of(Resend) == []
    assert core.stats.retries_after_401 == 0


def test_a_mixed_basic_challenge_on_a_bearer_origin_is_answered_for_its_request_alone() -> None:
    core = bearer_core(FlowPolicy(authorize_ahead=False))
    run = drive(core, get(), replies=[Reply(401, (BASIC_LINE,)), Reply(200)])
    assert run.effects[-1] == Resend(BASIC)
    st = core.origins.get(REG)
    assert st is not None
    assert st.phase is Phase.BEARER
    assert st.challenge == bearer_challenge()
    # The next request is still treated as a Bearer one.
    run = drive(core, get(), replies=[Reply(200)])
    assert run.sent == Send(None)


def test_a_refused_token_answered_with_a_basic_challenge_is_dropped_for_basic() -> None:
    # Harbor, once its tokens are revoked (google/go-containerregistry#1744).
    core = bearer_core()
    cache(core, PULL_A)
    run = drive(core, get(), replies=[Reply(401, (BASIC_LINE,)), Reply(200)], now=5.0)
    assert run.sent == Send("Bearer cached")
    assert run.effects[-2:] == [PrepareResend(), Resend(BASIC)]
    assert core.cache.get(identity(core).partition, PULL_A, 5.0) is None
    assert phase(core) is Phase.BEARER
    assert core.stats.retries_after_401 == 1


def test_refused_basic_on_a_bearer_origin_is_not_sent_again() -> None:
    core = bearer_core(FlowPolicy(authorize_ahead=False))
    replies = [Reply(401, (BASIC_LINE,)), Reply(401, (BASIC_LINE,))]
    run = drive(core, get(), replies=replies)
    assert run.of(Resend) == [Resend(BASIC)]
    assert isinstance(run.outcome, Pass)
    assert core.stats.responses_401 == 2


def test_a_bearer_challenge_is_answered_with_a_token() -> None:
    core = open_core()
    challenge = bearer_line("repository:a:pull repository:c:pull")
    run = drive(
        core,
        get("a", wanted=PULL_B),
        replies=[Reply(401, (challenge,)), Reply(200)],
        tokens=[ok("T2")],
    )
    (fetch,) = run.of(FetchToken)
    # key scope: the challenge's, the request's and the caller's wanted scope
    assert fetch.key == FetchKey(
        0, REALM, "reg", parse_scope("repository:a:pull repository:b:pull repository:c:pull")
    )
    assert fetch.job.required == parse_scope("repository:a:pull repository:c:pull")
    assert run.effects[-3:] == [PrepareResend(), fetch, Resend("Bearer T2")]
    assert isinstance(run.outcome, Pass)
    assert phase(core) is Phase.BEARER
    assert core.stats.retries_after_401 == 1
    assert core.in_flight() == frozenset()


def test_a_bearer_challenge_refused_again_is_denied() -> None:
    core = open_core()
    run = drive(core, get(), replies=[Reply(401, (bearer_line(),))] * 2, tokens=[ok()])
    assert isinstance(run.outcome, Deny)
    assert core.stats.responses_401 == 2
    assert core.stats.rewritten_403 == 1


def test_a_failed_fetch_after_a_401_fails_the_request() -> None:
    core = open_core()
    error = TokenServerError("down", registry=HOST, step="token", status=503)
    run = drive(core, get(), replies=[Reply(401, (bearer_line(),))], fetch=lambda _: error)
    assert run.outcome == Fail(error)
    assert run.of(Resend) == []


def test_a_401_from_a_never_challenged_cdn_origin_looks_credentials_up_then() -> None:
    core = AuthCore()
    cdn = URL("https://cdn.example/blob")
    run = drive(
        core,
        RequestFacts("GET", cdn),
        replies=[Reply(401, (bearer_line(realm="https://cdn.example/token"),)), Reply(200)],
        tokens=[ok("T3")],
    )
    kinds = [type(e) for e in run.effects]
    assert kinds == [Send, LookupCredentials, PrepareResend, FetchToken, Resend]
    assert run.effects[-1] == Resend("Bearer T3")


def test_a_401_from_a_cdn_origin_takes_a_cached_token_of_any_age() -> None:
    # Nothing of ours went with the request, so any cached token is worth a try.
    core = AuthCore()
    cdn = URL("https://cdn.example/blob")
    core.origin_of(cdn)
    ident = core.adopt(core.origin_of(cdn), "", CREDS)
    core.cache.put(ident.partition, AccessToken("old", PULL_A, 1.0, 1000.0))
    run = drive(
        core,
        RequestFacts("GET", cdn),
        replies=[Reply(401, (bearer_line(realm="https://cdn.example/token"),)), Reply(200)],
        now=5.0,
    )
    assert run.of(FetchToken) == []
    assert run.effects[-1] == Resend("Bearer old")


@pytest.mark.parametrize(("callers", "resent"), [(False, [Resend(BASIC)]), (True, [])])
def test_a_basic_401_from_a_never_challenged_cdn_origin_gets_its_hosts_credentials(
    callers: bool, resent: list[Resend]
) -> None:
    core = AuthCore()
    cdn = URL("https://cdn.example/blob")
    facts = RequestFacts("GET", cdn, callers_authorization=callers)
    run = drive(core, facts, replies=[Reply(401, (BASIC_LINE,)), Reply(200)])
    assert [lk.host for lk in run.of(LookupCredentials)] == ["cdn.example"]
    assert run.of(Resend) == resent  # never over the caller's own Authorization
    assert isinstance(run.outcome, Pass)


def test_a_401_from_a_cdn_origin_looks_up_the_hosts_own_credentials() -> None:
    # Its path names no repository: no per-namespace key of the host covers it.
    core = AuthCore()
    core.set_namespaces(lambda host: ("team",))
    cdn = URL("https://cdn.example/team/blob")
    line = bearer_line(realm="https://cdn.example/token")
    run = drive(
        core, RequestFacts("GET", cdn), replies=[Reply(401, (line,)), Reply(200)], tokens=[ok()]
    )
    assert [lk.namespace for lk in run.of(LookupCredentials)] == [""]
    assert run.effects[-1] == Resend("Bearer T1")


def test_a_refused_token_is_forgotten() -> None:
    core = bearer_core()
    tok = cache(core, PULL_A)
    run = drive(
        core,
        get(),
        replies=[Reply(401, (bearer_line(error="invalid_token"),)), Reply(200)],
        tokens=[ok("T2")],
        now=5.0,
    )
    assert run.sent == Send("Bearer cached")
    assert run.effects[-1] == Resend("Bearer T2")
    part = identity(core).partition
    got = core.cache.get(part, PULL_A, 5.0)
    assert got is not None
    assert got is not tok
    assert got.value == "T2"


def test_insufficient_scope_narrows_the_token_it_refused() -> None:
    # A token for a and b, refused for b: still good for a, no longer trusted for b.
    core = bearer_core()
    both = PULL_A.union(PULL_B)
    cache(core, both)
    run = drive(
        core,
        get("b"),
        replies=[
            Reply(401, (bearer_line("repository:b:pull", error="insufficient_scope"),)),
            Reply(200),
        ],
        tokens=[ok("TB")],
        now=5.0,
    )
    assert run.sent == Send("Bearer cached")
    part = identity(core).partition
    kept = core.cache.get(part, PULL_A, 5.0)
    assert kept is not None
    assert kept.value == "cached"
    assert kept.scope == PULL_A
    again = drive(core, get("a"), now=6.0)
    assert again.sent == Send("Bearer cached")
    assert again.of(FetchToken) == []


def test_insufficient_scope_without_a_scope_forgets_the_token() -> None:
    core = bearer_core()
    cache(core, PULL_A.union(PULL_B))
    drive(
        core,
        get("b"),
        replies=[Reply(401, (bearer_line("", error="insufficient_scope"),)), Reply(200)],
        tokens=[ok("T2")],
        now=5.0,
    )
    kept = core.cache.get(identity(core).partition, PULL_A, 5.0)
    assert kept is None or kept.value != "cached"


def test_a_token_refused_by_its_own_claims_is_denied_without_asking_again() -> None:
    core = bearer_core(challenge=bearer_challenge("repository:a:pull,push"))
    run = drive(
        core,
        put("a"),
        replies=[Reply(401, (bearer_line("repository:a:pull,push"),))],
        tokens=[ok(jwt(("repository", "a", ["pull"])))],
    )
    assert len(run.of(FetchToken)) == 1  # the one ahead
    assert len(run.calls) == 1
    assert isinstance(run.outcome, Deny)
    assert run.of(PrepareResend) == []
    assert core.stats.refused_ahead == 1
    assert core.stats.rewritten_403 == 1


def test_an_opaque_token_refused_is_asked_for_again() -> None:
    core = bearer_core(challenge=bearer_challenge("repository:a:pull,push"))
    run = drive(
        core,
        put("a"),
        replies=[Reply(401, (bearer_line("repository:a:pull,push"),)), Reply(200)],
        tokens=[ok("T1"), ok("T2")],
        now=1.0,
    )
    assert len(run.of(FetchToken)) == 2
    assert run.effects[-1] == Resend("Bearer T2")
    assert core.stats.refused_ahead == 0


# -- the newer-than guard -------------------------------------------------------


def test_a_token_older_than_the_refused_request_is_not_sent_again() -> None:
    core = bearer_core()
    older = cache(core, PULL_A, "older", issued=1.0)
    cache(core, PULL_A, "newer", issued=2.0)  # found first
    run = drive(
        core,
        get(),
        replies=[Reply(401, (bearer_line(error="invalid_token"),)), Reply(200)],
        tokens=[ok("T3")],
        now=10.0,
    )
    assert run.sent == Send("Bearer newer")
    # "older" was in the cache before the request went out: it is what the registry refused.
    assert len(run.of(FetchToken)) == 1
    assert run.effects[-1] == Resend("Bearer T3")
    assert older.issued_at < 10.0


def until_send(core: AuthCore, flow: Any, now: float) -> object:
    """Step ``flow`` to its Send, answering a credentials lookup with CREDS."""
    effect = core.resume(flow, None, now)
    if isinstance(effect, LookupCredentials):
        effect = core.resume(flow, CREDS, now)
    return effect


def test_a_token_obtained_while_the_request_was_out_is_used() -> None:
    core = bearer_core(FlowPolicy(authorize_ahead=False))
    clock = [10.0]
    part = identity(core).partition
    flow = core.request_flow(get())
    assert until_send(core, flow, clock[0]) == Send(None)
    # Another request's fetch ends while this one is out.
    core.cache.put(part, AccessToken("fresh", PULL_A, 11.0, 500.0))
    assert core.resume(flow, Reply(401, (bearer_line(),)), 12.0) == PrepareResend()
    assert core.resume(flow, None, 12.0) == Resend("Bearer fresh")


def test_a_token_issued_as_the_request_went_out_is_used() -> None:
    core = bearer_core(FlowPolicy(authorize_ahead=False))
    part = identity(core).partition
    flow = core.request_flow(get())
    assert until_send(core, flow, 10.0) == Send(None)
    core.cache.put(part, AccessToken("same-time", PULL_A, 10.0, 500.0))
    core.resume(flow, Reply(401, (bearer_line(),)), 12.0)
    assert core.resume(flow, None, 12.0) == Resend("Bearer same-time")


# -- joining fetches in flight ----------------------------------------------------


def start(core: AuthCore, facts: RequestFacts, reply: Reply, now: float = 0.0) -> FetchToken:
    """Run a request flow until it asks for a token fetch after the 401 ``reply``."""
    flow = core.request_flow(facts)
    value: object = None
    for _ in range(10):
        effect = core.resume(flow, value, now)
        if isinstance(effect, FetchToken):
            return effect
        value = {LookupCredentials: CREDS, Send: reply}.get(type(effect))
    raise AssertionError("no FetchToken")


#: Nothing fetched ahead: each request's FetchToken is the one its own 401 asks for.
AFTER_401 = FlowPolicy(authorize_ahead=False)


def test_a_request_joins_a_fetch_in_flight_that_covers_its_scope() -> None:
    core = open_core(AFTER_401)
    first = start(core, put("a"), Reply(401, (bearer_line("repository:a:pull,push"),)))
    assert core.in_flight() == {first.key}
    second = start(core, get("a"), Reply(401, (bearer_line("repository:a:pull"),)))
    assert second.key == first.key  # joined: the push fetch holds pull too
    assert second.key.scope == PUSH_A
    core.fetch_ended(first.key)
    assert core.in_flight() == frozenset()
    third = start(core, get("a"), Reply(401, (bearer_line("repository:a:pull"),)))
    assert third.key.scope == PULL_A  # nothing to join: its own fetch


@pytest.mark.parametrize(
    ("facts", "line", "entry"),
    [
        (get("b"), bearer_line("repository:b:pull"), CREDS),  # another repository
        (get("a"), bearer_line("repository:a:pull", realm="https://reg.example/t2"), CREDS),
        (get("a"), bearer_line("repository:a:pull"), ConfigEntry(username="bob", password="x")),
    ],
)
def test_a_fetch_in_flight_that_does_not_fit_is_not_joined(
    facts: RequestFacts, line: str, entry: ConfigEntry
) -> None:
    core = open_core(FlowPolicy(authorize_ahead=False, coalesce_token_requests=1))
    first = start(core, put("a"), Reply(401, (bearer_line("repository:a:pull,push"),)))
    core.adopt(core.origin_of(REG), "", entry)  # who the next request is, looked up or not
    flow = core.request_flow(facts)
    value: object = None
    while not isinstance(effect := core.resume(flow, value, 0.0), FetchToken):
        value = {LookupCredentials: entry, Send: Reply(401, (line,))}.get(type(effect))
    assert effect.key != first.key
    assert core.in_flight() == {first.key, effect.key}


def test_a_refresh_in_flight_is_never_joined() -> None:
    core = bearer_core()
    cache(core, PULL_A, issued=0.0, life=100.0)
    run = drive(core, get(), now=90.0)
    (refresh,) = run.of(RefreshInBackground)
    assert refresh.key.refresh
    # Its token is refused meanwhile: the request fetches on its own.
    second = start(core, get(), Reply(401, (bearer_line(error="invalid_token"),)), now=91.0)
    assert not second.key.refresh
    assert second.key != refresh.key
    assert core.in_flight() == {refresh.key, second.key}


def test_a_fetch_in_flight_is_not_registered_twice() -> None:
    core = open_core(AFTER_401)
    first = start(core, get("a"), Reply(401, (bearer_line(),)), now=1.0)
    second = start(core, get("a"), Reply(401, (bearer_line(),)), now=2.0)
    assert second.key == first.key
    assert core.in_flight() == {first.key}


# -- refresh ahead ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "refreshed"),
    [(50.0, False), (84.0, False), (85.0, True), (90.0, True)],
)
def test_refresh_ahead_in_the_last_part_of_a_tokens_life(now: float, refreshed: bool) -> None:
    core = bearer_core()  # refresh_fraction 0.15: due from 85 s of 100
    tok = cache(core, PULL_A, issued=0.0, life=100.0)
    run = drive(core, get(), now=now)
    assert run.sent == Send("Bearer cached")  # the token still goes with the request
    refreshes = run.of(RefreshInBackground)
    assert len(refreshes) == int(refreshed)
    assert core.stats.refreshes_ahead == int(refreshed)
    if refreshed:
        (r,) = refreshes
        assert r.key == FetchKey(0, REALM, "reg", PULL_A, True)
        assert r.job.required == tok.scope
        assert r.job.wanted == tok.scope
        assert r.job.challenge == bearer_challenge()
        assert run.effects.index(r) < run.effects.index(run.sent)


def test_a_refused_token_due_for_refresh_is_replaced_by_a_token_newer_than_the_request() -> None:
    core = bearer_core()
    part = identity(core).partition
    core.cache.put(part, AccessToken("older", PULL_A, -10.0, 500.0))
    due = AccessToken("due", PULL_A, 0.0, 100.0)  # found first: the newer of the two
    core.cache.put(part, due)
    line = bearer_line(error="invalid_token")
    run = drive(core, get(), replies=[Reply(401, (line,)), Reply(200)], tokens=[ok("T2")], now=90.0)
    assert run.sent == Send("Bearer due")
    assert len(run.of(RefreshInBackground)) == 1
    # The token issued before the request went out is no better than the one refused.
    (fetch,) = run.of(FetchToken)
    assert fetch.job.replacing is due
    assert run.effects[-1] == Resend("Bearer T2")
    assert not core.cache.touch(due)  # forgotten


def test_a_token_due_for_refresh_refused_with_a_basic_challenge_gives_way_to_the_password() -> None:
    core = bearer_core()
    cache(core, PULL_A, "due", issued=0.0, life=100.0)
    run = drive(core, get(), replies=[Reply(401, (BASIC_LINE,)), Reply(200)], now=90.0)
    assert run.sent == Send("Bearer due")
    assert run.effects[-1] == Resend(BASIC)
    assert core.cache.get(identity(core).partition, PULL_A, 90.0) is None


def test_one_refresh_ahead_at_a_time() -> None:
    core = bearer_core()
    cache(core, PULL_A, issued=0.0, life=100.0)
    first = drive(core, get(), now=90.0).of(RefreshInBackground)
    assert len(first) == 1
    assert drive(core, get(), now=91.0).of(RefreshInBackground) == []
    core.fetch_ended(first[0].key)
    assert len(drive(core, get(), now=92.0).of(RefreshInBackground)) == 1
    assert core.stats.refreshes_ahead == 2


@pytest.mark.parametrize(
    "make",
    [
        lambda: bearer_core(FlowPolicy(refresh_ahead=False)),
        basic_core,  # not a Bearer origin: no token server to ask
        open_core,
    ],
)
def test_no_refresh_ahead(make: Callable[[], AuthCore]) -> None:
    core = make()
    cache(core, PULL_A, issued=0.0, life=100.0)
    run = drive(core, get(), now=90.0)
    assert run.of(RefreshInBackground) == []
    assert core.stats.refreshes_ahead == 0


def test_a_token_that_never_expires_is_never_refreshed() -> None:
    core = bearer_core()
    run = drive(core, get(), entry=ConfigEntry(access_token="REG"), now=1e9)
    assert run.of(RefreshInBackground) == []


def test_a_refresh_ahead_runs_the_fetch_flow_for_its_scope() -> None:
    core = bearer_core()
    cache(core, PULL_A, issued=0.0, life=100.0)
    (r,) = drive(core, get(), now=90.0).of(RefreshInBackground)
    got, calls = run_fetch(core, r.job, [ok("R2")], now=90.0)
    core.fetch_ended(r.key)
    assert isinstance(got, AccessToken)
    assert got.issued_at == 90.0
    assert calls[0].url.query.getall("scope") == ["repository:a:pull"]
    assert drive(core, get(), now=91.0).sent == Send("Bearer R2")


# -- the token fetch --------------------------------------------------------------


def job(
    core: AuthCore,
    *,
    entry: ConfigEntry = CREDS,
    realm: str = REALM,
    required: Scope = PULL_A,
    wanted: Scope | None = None,
    base: URL = REG,
    service: str = "reg",
    source: str = "",
) -> FetchJob:
    st = core.origin_of(base)
    params = {"realm": realm} if realm else {}
    if service:
        params["service"] = service
    ch = Challenge("bearer", params)
    st = core.origins.apply(st, Answered(ch))
    ident = core.adopt(st, "", LookupAnswer(entry, source))
    return FetchJob(st, ident, ch, required, wanted if wanted is not None else required)


def test_a_fetch_with_basic_credentials_is_a_get_with_basic() -> None:
    core = AuthCore()
    got, calls = run_fetch(core, job(core), [ok("T1", expires_in=120)], now=7.0)
    (call,) = calls
    assert call.kind == "get_basic"
    assert call.method == "GET"
    assert call.authorization == BASIC
    assert call.form is None
    assert call.url.query.getall("scope") == ["repository:a:pull"]
    assert call.url.query["service"] == "reg"
    assert call.url.with_query(None) == URL(REALM)
    assert call.registry == HOST
    assert not call.loopback_ok
    assert isinstance(got, AccessToken)
    assert (got.value, got.scope, got.issued_at, got.expires_at) == ("T1", PULL_A, 7.0, 127.0)
    assert not got.introspected
    assert core.cache.get(0, PULL_A, 8.0) is got
    assert core.stats.token_fetches == 1
    assert core.stats.token_fetch_failures == 0
    assert core.stats.anonymous_realm_downgrades == 0  # a trusted realm is no downgrade


def test_a_fetch_without_credentials_is_anonymous() -> None:
    core = AuthCore()
    _, calls = run_fetch(core, job(core, entry=NO_CREDS), [ok()])
    assert calls[0].kind == "get_anonymous"
    assert calls[0].authorization is None
    assert core.stats.anonymous_realm_downgrades == 0


def test_a_fetch_from_a_registry_on_this_machine_may_use_loopback() -> None:
    core = AuthCore()
    base = URL("http://127.0.0.1:5000")
    j = job(core, base=base, realm="http://127.0.0.1:5000/token")
    _, calls = run_fetch(core, j, [ok()])
    assert calls[0].loopback_ok
    assert calls[0].registry == "127.0.0.1:5000"


def test_a_fetch_with_a_refresh_token_is_an_oauth2_post() -> None:
    core = AuthCore()
    entry = ConfigEntry(username="alice", refresh_token="RT")
    got, calls = run_fetch(core, job(core, entry=entry), [ok("T1")])
    (call,) = calls
    assert (call.kind, call.method, call.authorization) == ("post_refresh", "POST", None)
    assert call.url == URL(REALM)
    assert call.form == {
        "grant_type": "refresh_token",
        "refresh_token": "RT",
        "client_id": OAUTH_CLIENT_ID,
        "scope": "repository:a:pull",
        "service": "reg",
    }
    assert isinstance(got, AccessToken)


@pytest.mark.parametrize(("status", "kind"), [(404, "get_anonymous"), (405, "get_anonymous")])
def test_a_token_server_without_oauth2_is_asked_with_get(status: int, kind: str) -> None:
    core = AuthCore()
    entry = ConfigEntry(refresh_token="RT")
    got, calls = run_fetch(core, job(core, entry=entry), [TokenReply(status), ok("T1")])
    assert [c.method for c in calls] == ["POST", "GET"]
    assert calls[1].kind == kind
    assert isinstance(got, AccessToken)


def test_the_get_fallback_carries_basic_when_there_is_a_password() -> None:
    core = AuthCore()
    entry = ConfigEntry(username="alice", password="secret", refresh_token="RT")
    _, calls = run_fetch(core, job(core, entry=entry), [TokenReply(404), ok()])
    assert calls[1].kind == "get_basic"
    assert calls[1].authorization == BASIC


@pytest.mark.parametrize("status", [401, 403, 500])
def test_a_refresh_grant_refused_is_not_retried_with_get(status: int) -> None:
    core = AuthCore()
    got, calls = run_fetch(
        core, job(core, entry=ConfigEntry(refresh_token="RT")), [TokenReply(status)]
    )
    assert [c.method for c in calls] == ["POST"]
    assert isinstance(got, TokenServerError)
    assert got.status == status
    assert core.stats.token_fetch_failures == 1


def test_a_refresh_grant_that_failed_on_the_way_is_not_retried_with_get() -> None:
    core = AuthCore()
    error = TokenServerError("too big", registry=HOST, step="token", status=404)
    got, calls = run_fetch(
        core, job(core, entry=ConfigEntry(refresh_token="RT")), [TokenReply(404, error=error)]
    )
    assert len(calls) == 1
    assert got is error


def test_the_current_refresh_token_is_used() -> None:
    core = AuthCore()
    entry = ConfigEntry(username="alice", password="secret", refresh_token="RT1")
    first = job(core, entry=entry)
    run_fetch(core, first, [ok("T1", refresh_token="RT2")])
    assert core.refresh_token(first.identity) == "RT2"
    _, calls = run_fetch(core, job(core, entry=entry), [ok("T2")])
    assert calls[0].form is not None
    assert calls[0].form["refresh_token"] == "RT2"


def test_a_refresh_token_from_an_anonymous_realm_is_not_adopted() -> None:
    core = AuthCore()
    j = job(core, entry=ConfigEntry(refresh_token="RT1"), realm=FOREIGN_REALM)
    _, calls = run_fetch(core, j, [ok("T1", refresh_token="STRANGER")])
    assert calls[0].kind == "get_anonymous"  # no refresh grant to a stranger either
    assert core.refresh_token(j.identity) == "RT1"
    assert core.stats.anonymous_realm_downgrades == 1


def test_a_refresh_token_is_adopted_from_a_basic_answer() -> None:
    core = AuthCore()
    j = job(core)
    run_fetch(core, j, [ok("T1", refresh_token="RT9")])
    assert core.refresh_token(j.identity) == "RT9"


def test_a_realm_not_trusted_with_credentials_is_asked_anonymously() -> None:
    core = AuthCore()
    got, calls = run_fetch(core, job(core, realm=FOREIGN_REALM), [ok()])
    assert calls[0].kind == "get_anonymous"
    assert calls[0].authorization is None
    assert calls[0].url.host == "auth.other.test"
    assert core.stats.anonymous_realm_downgrades == 1
    assert isinstance(got, AccessToken)


def test_a_relative_realm_is_relative_to_the_registry() -> None:
    core = AuthCore()
    _, calls = run_fetch(core, job(core, realm="/token"), [ok()])
    assert calls[0].url.with_query(None) == URL("https://reg.example/token")
    assert calls[0].kind == "get_basic"


def test_a_challenge_without_a_realm_fails_before_any_request() -> None:
    core = AuthCore()
    got, calls = run_fetch(core, job(core, realm=""), [])
    assert calls == []
    assert isinstance(got, ChallengeError)
    assert got.registry == HOST
    assert got.step == "challenge"
    assert str(got) == "malformed Www-Authenticate header from reg.example (missing realm)"
    assert core.stats.token_fetches == 1
    assert core.stats.token_fetch_failures == 1


@pytest.mark.parametrize(
    ("realm", "policy"),
    [
        ("https://127.0.0.1/token", RealmPolicy()),  # a private address not the registry's
        (FOREIGN_REALM, RealmPolicy(strict=True)),
        ("ftp://reg.example/token", RealmPolicy()),
    ],
)
def test_a_realm_the_policy_refuses_fails_before_any_request(
    realm: str, policy: RealmPolicy
) -> None:
    core = AuthCore(FlowPolicy(realm_policy=policy))
    got, calls = run_fetch(core, job(core, realm=realm), [])
    assert calls == []
    assert isinstance(got, RealmPolicyError)
    assert got.step == "realm"
    assert got.registry == HOST
    assert str(got).startswith("refusing token request for reg.example: realm ")
    assert core.stats.token_fetch_failures == 1


def test_a_realm_that_is_not_a_url_is_refused() -> None:
    core = AuthCore()
    got, calls = run_fetch(core, job(core, realm="http://[::1"), [])
    assert calls == []
    assert isinstance(got, RealmPolicyError)


@pytest.mark.parametrize("status", sorted(REFUSALS))
def test_a_wide_scope_refused_is_narrowed_to_the_required_scope(status: int) -> None:
    core = AuthCore()
    j = job(core, required=PULL_A, wanted=PULL_A.union(PULL_B))
    got, calls = run_fetch(core, j, [TokenReply(status), ok("T1")])
    assert [sorted(c.url.query.getall("scope")) for c in calls] == [
        ["repository:a:pull", "repository:b:pull"],
        ["repository:a:pull"],
    ]
    assert [(c.kind, c.authorization) for c in calls] == [("get_basic", BASIC)] * 2
    assert isinstance(got, AccessToken)
    assert got.scope == PULL_A
    st = core.origins.get(REG)
    assert st is not None
    assert st.narrow_only
    # The picky token server is remembered: the next fetch asks for the required scope only.
    got, calls = run_fetch(core, job(core, required=PULL_B, wanted=PULL_A.union(PULL_B)), [ok()])
    assert [c.url.query.getall("scope") for c in calls] == [["repository:b:pull"]]


def test_the_picky_memory_is_read_from_the_current_state() -> None:
    core = AuthCore()
    j = job(core, required=PULL_A, wanted=PULL_A.union(PULL_B))  # made before it learnt
    core.origins.apply(j.origin, WideScopeRefused())
    _, calls = run_fetch(core, j, [ok()])
    assert [c.url.query.getall("scope") for c in calls] == [["repository:a:pull"]]


def test_the_picky_memory_is_used_by_the_request_flow() -> None:
    core = bearer_core()
    core.origins.apply(core.origin_of(REG), WideScopeRefused())
    run = drive(core, get("a", wanted=PULL_B), tokens=[ok()])
    assert [c.url.query.getall("scope") for c in run.calls] == [["repository:a:pull"]]


@pytest.mark.parametrize("status", [404, 429, 500, 503])
def test_other_answers_to_a_wide_scope_are_not_narrowed(status: int) -> None:
    core = AuthCore()
    j = job(core, required=PULL_A, wanted=PULL_A.union(PULL_B))
    got, calls = run_fetch(core, j, [TokenReply(status)])
    assert len(calls) == 1
    assert isinstance(got, TokenServerError)
    assert got.status == status
    st = core.origins.get(REG)
    assert st is not None
    assert not st.narrow_only


def test_a_required_scope_refused_is_not_asked_again() -> None:
    core = AuthCore()
    got, calls = run_fetch(core, job(core, required=PULL_A, wanted=PULL_A), [TokenReply(401)])
    assert len(calls) == 1
    assert isinstance(got, TokenServerError)
    assert got.status == 401
    st = core.origins.get(REG)
    assert st is not None
    assert not st.narrow_only


@pytest.mark.parametrize("status", [None, 200])  # unreachable; a body too big
def test_a_token_server_that_gave_no_usable_answer_is_not_narrowed(status: int | None) -> None:
    core = AuthCore()
    error = TokenServerError("no answer", registry=HOST, step="token", status=status)
    j = job(core, required=PULL_A, wanted=PULL_A.union(PULL_B))
    got, calls = run_fetch(core, j, [TokenReply(status, error=error)])
    assert len(calls) == 1
    assert got is error
    assert core.stats.token_fetch_failures == 1


def test_the_narrow_retry_failing_is_a_failure() -> None:
    core = AuthCore()
    j = job(core, required=PULL_A, wanted=PULL_A.union(PULL_B))
    got, calls = run_fetch(core, j, [TokenReply(401), TokenReply(403)])
    assert len(calls) == 2
    assert isinstance(got, TokenServerError)
    assert got.status == 403
    assert core.stats.token_fetch_failures == 1


@pytest.mark.parametrize(
    ("access", "scope", "introspected"),
    [
        ([("repository", "a", ["pull"])], PULL_A, True),  # a subset grant: narrowed
        ([("repository", "a", ["pull", "push"])], PUSH_A, True),
        ([("repository", "a", ["pull", "push", "delete"])], PUSH_A, True),  # never widened
        ([], Scope(), True),
    ],
)
def test_a_grant_is_read_from_the_tokens_claims(
    access: list[tuple[str, str, list[str]]], scope: Scope, introspected: bool
) -> None:
    core = AuthCore()
    got, _ = run_fetch(core, job(core, required=PUSH_A), [ok(jwt(*access))])
    assert isinstance(got, AccessToken)
    assert got.scope == scope
    assert got.introspected is introspected


def test_a_subset_grant_is_cached_for_what_it_holds() -> None:
    core = AuthCore()
    j = job(core, required=PULL_A, wanted=PULL_A.union(PULL_B))
    got, _ = run_fetch(core, j, [ok(jwt(("repository", "a", ["pull"])))], now=1.0)
    assert core.cache.get(j.identity.partition, PULL_A, 2.0) is got
    assert core.cache.get(j.identity.partition, PULL_B, 2.0) is None


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"token": ""}', b'{"token": "a b"}', b'{"expires_in": 5}'],
)
def test_a_garbage_token_answer_is_a_token_response_error(body: bytes) -> None:
    core = AuthCore()
    got, _ = run_fetch(core, job(core), [TokenReply(200, body)])
    assert isinstance(got, TokenResponseError)
    assert got.registry == HOST
    assert core.stats.token_fetch_failures == 1
    assert len(core.cache) == 0


def test_a_non_200_answer_is_a_token_server_error() -> None:
    core = AuthCore()
    got, _ = run_fetch(core, job(core), [TokenReply(502)])
    assert isinstance(got, TokenServerError)
    assert not isinstance(got, TokenResponseError)
    assert got.status == 502
    assert got.registry == HOST
    assert got.step == "token"
    assert "reg.example" in str(got)
    assert "502" in str(got)


# -- the rest of the core's surface -------------------------------------------------


def test_adopt_gives_one_partition_per_entry_and_origin() -> None:
    core = AuthCore()
    st = core.origin_of(REG)
    a = core.adopt(st, "", CREDS)
    assert core.adopt(st, "", ConfigEntry(username="alice", password="secret")) == a
    b = core.adopt(st, "", ConfigEntry(username="bob", password="x"))
    c = core.adopt(st, "team", CREDS)
    other = core.adopt(core.origin_of(URL("https://other.example")), "", CREDS)
    assert len({a.partition, b.partition, c.partition, other.partition}) == 4
    assert a.basic == BASIC
    assert a.username == "alice"
    assert core.adopt(st, "", ConfigEntry(username="u")).basic == ""
    assert core.adopt(st, "", ConfigEntry(password="p")).basic == ""


def test_adopt_caches_the_configs_access_token_once() -> None:
    core = AuthCore()
    st = core.origin_of(REG)
    ident = core.adopt(st, "", ConfigEntry(access_token="REG"))
    tok = core.cache.get(ident.partition, PUSH_A, 0.0)
    assert tok is not None
    assert tok.value == "REG"
    assert tok.scope.is_unlimited()
    assert tok.expires_at == math.inf
    assert tok.issued_at == -math.inf  # older than any request: never "newer than" one
    core.adopt(st, "", ConfigEntry(access_token="REG"))
    assert len(core.cache) == 1


def test_cached_token_looks_in_every_identity_of_the_origin() -> None:
    core = AuthCore()
    st = core.origin_of(REG)
    core.adopt(st, "", CREDS)
    bob = core.adopt(st, "", ConfigEntry(username="bob", password="x"))
    tok = AccessToken("B", PULL_A, 0.0, 100.0)
    core.cache.put(bob.partition, tok)
    assert core.cached_token(REG.with_path("/v2/"), PULL_A, 1.0) is tok
    assert core.cached_token(REG, PULL_B, 1.0) is None
    assert core.cached_token(URL("https://other.example"), PULL_A, 1.0) is None
    assert core.cached_token(REG, PULL_A, 200.0) is None  # expired


def test_the_refresh_token_is_the_configs_until_one_is_adopted() -> None:
    core = AuthCore()
    ident = core.adopt(core.origin_of(REG), "", ConfigEntry(refresh_token="RT"))
    assert core.refresh_token(ident) == "RT"


def test_resume_sets_the_cores_clock() -> None:
    core = AuthCore()
    assert core.now == 0.0
    flow = core.request_flow(get())
    core.resume(flow, None, 42.0)
    assert core.now == 42.0


def test_every_request_is_counted() -> None:
    core = AuthCore()
    drive(core, get())
    drive(core, RequestFacts("GET", URL("https://cdn.example/x")))
    assert core.stats.requests == 2


def test_an_identity_does_not_show_its_secrets() -> None:
    ident = identity(
        AuthCore(), ConfigEntry(username="alice", password="secret", refresh_token="RT")
    )
    assert "secret" not in repr(ident)
    assert "RT" not in repr(ident)
    assert BASIC not in repr(ident)


def test_defaults_of_the_policy() -> None:
    p = FlowPolicy()
    assert (p.infer_scopes, p.authorize_ahead, p.coalesce_first_contact, p.refresh_ahead) == (
        True,
        True,
        True,
        True,
    )
    assert p.refresh_fraction == 0.15
    assert (p.max_scope_items, p.max_scope_bytes) == (256, 4096)
    assert (p.cache_size, p.max_origins) == (10_000, 4096)
    core = AuthCore(FlowPolicy(cache_size=3, max_origins=5))
    assert core.cache.max_entries == 3
    assert core.origins.max_origins == 5


def test_origin_state_of_a_url() -> None:
    core = AuthCore()
    st = core.origin_of(URL("http://[::1]:5000/v2/a/manifests/x"))
    assert (st.url, st.host, st.phase) == (URL("http://[::1]:5000"), "[::1]:5000", Phase.NEW)
    assert core.origins.get(URL("http://[::1]:5000")) is st


# -- counters ---------------------------------------------------------------------


def sc_cache_hit(stats: AuthStats) -> None:
    core = bearer_core(stats=stats)
    cache(core, PULL_A)
    drive(core, get())


def sc_basic_refused_twice(stats: AuthStats) -> None:
    core = open_core(stats=stats)
    drive(core, get(), replies=[Reply(401, (BASIC_LINE,)), Reply(401, (BASIC_LINE,))])


def sc_bearer_denied(stats: AuthStats) -> None:
    core = open_core(stats=stats)
    drive(core, get(), replies=[Reply(401, (bearer_line(),))] * 2, tokens=[ok()])


def sc_fetch_ahead_refused(stats: AuthStats) -> None:
    core = bearer_core(stats=stats)
    error = TokenServerError("refused", registry=HOST, step="token", status=403)
    drive(core, get(), fetch=lambda _: error)


def sc_refused_by_claims(stats: AuthStats) -> None:
    core = bearer_core(challenge=bearer_challenge("repository:a:pull,push"), stats=stats)
    drive(
        core,
        put("a"),
        replies=[Reply(401, (bearer_line("repository:a:pull,push"),))],
        tokens=[ok(jwt(("repository", "a", ["pull"])))],
    )


def sc_rate_limited(stats: AuthStats) -> None:
    drive(open_core(stats=stats), get(), replies=[Reply(429)])


def sc_burst_waits(stats: AuthStats) -> None:
    core = AuthCore(None, stats)
    core.origins.apply(core.origin_of(REG), ProbeSent())
    drive(core, get(), on_await=lambda _: core.probe_ended(REG))


def sc_refresh_ahead(stats: AuthStats) -> None:
    core = bearer_core(stats=stats)
    cache(core, PULL_A, issued=0.0, life=100.0)
    drive(core, get(), now=90.0)


def sc_fetch_without_realm(stats: AuthStats) -> None:
    core = AuthCore(None, stats)
    run_fetch(core, job(core, realm=""), [])


def sc_token_server_down(stats: AuthStats) -> None:
    core = AuthCore(None, stats)
    run_fetch(core, job(core), [TokenReply(503)])


def sc_anonymous_realm(stats: AuthStats) -> None:
    core = AuthCore(None, stats)
    run_fetch(core, job(core, realm=FOREIGN_REALM), [ok()])


SCENARIOS: dict[str, tuple[Callable[[AuthStats], None], dict[str, int]]] = {
    "cache hit": (sc_cache_hit, {"requests": 1, "cache_hits": 1}),
    "basic refused twice": (
        sc_basic_refused_twice,
        {"requests": 1, "cache_misses": 1, "responses_401": 2, "retries_after_401": 1},
    ),
    "bearer denied": (
        sc_bearer_denied,
        {
            "requests": 1,
            "cache_misses": 1,
            "responses_401": 2,
            "retries_after_401": 1,
            "rewritten_403": 1,
            "token_fetches": 1,
        },
    ),
    "fetch ahead refused": (
        sc_fetch_ahead_refused,
        {"requests": 1, "cache_misses": 1, "fetches_ahead": 1, "fetches_ahead_failed": 1},
    ),
    "refused by its claims": (
        sc_refused_by_claims,
        {
            "requests": 1,
            "cache_misses": 1,
            "fetches_ahead": 1,
            "token_fetches": 1,
            "responses_401": 1,
            "refused_ahead": 1,
            "rewritten_403": 1,
        },
    ),
    "429": (sc_rate_limited, {"requests": 1, "cache_misses": 1, "registry_429s": 1}),
    "burst waits": (sc_burst_waits, {"requests": 1, "cache_misses": 1, "first_contact_waits": 1}),
    "refresh ahead": (sc_refresh_ahead, {"requests": 1, "cache_hits": 1, "refreshes_ahead": 1}),
    "fetch without realm": (
        sc_fetch_without_realm,
        {"token_fetches": 1, "token_fetch_failures": 1},
    ),
    "token server down": (
        sc_token_server_down,
        {"token_fetches": 1, "token_fetch_failures": 1},
    ),
    "anonymous realm": (
        sc_anonymous_realm,
        {"token_fetches": 1, "anonymous_realm_downgrades": 1},
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_each_path_counts_and_counts_add_up(name: str) -> None:
    scenario, expected = SCENARIOS[name]
    stats = AuthStats()
    scenario(stats)
    counted = {k: v for k, v in stats.as_dict().items() if v and k != "token_requests"}
    counted.pop("total_token_requests", None)
    assert counted == expected
    scenario(stats)  # a second time, on a fresh core sharing the counters: they add up
    twice = {k: v for k, v in stats.as_dict().items() if v and k != "token_requests"}
    twice.pop("total_token_requests", None)
    assert twice == {k: 2 * v for k, v in expected.items()}


# -- the story in the log -----------------------------------------------------------


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "aociauth"]


def test_the_log_tells_a_fetch_ahead_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="aociauth")
    core = bearer_core()
    error = TokenServerError("denied by policy", registry=HOST, step="token", status=403)
    drive(core, get(), fetch=lambda _: error)
    assert messages(caplog) == [
        (
            "DEBUG",
            "early token fetch for reg.example refused (denied by policy); the challenge decides",
        )
    ]


def test_the_log_tells_a_token_and_a_subset_grant(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="aociauth")
    core = AuthCore()
    run_fetch(core, job(core, required=PUSH_A), [ok(jwt(("repository", "a", ["pull"])), 120)])
    assert messages(caplog) == [
        (
            "DEBUG",
            "token for reg.example grants only 'repository:a:pull' of 'repository:a:pull,push'",
        ),
        ("DEBUG", "token for reg.example scope='repository:a:pull' expires_in=120s"),
    ]


def test_the_log_warns_of_an_anonymous_realm(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="aociauth")
    core = AuthCore()
    run_fetch(core, job(core, realm=FOREIGN_REALM), [ok("T1", 60)])
    assert messages(caplog)[0] == (
        "WARNING",
        "realm for reg.example is not trusted with credentials (realm https://auth.other.test "
        "is not trusted with credentials for reg.example); asking anonymously",
    )


def test_the_log_tells_a_wanted_scope_left_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="aociauth")
    drive(open_core(), get(wanted=unlimited_scope()))
    assert messages(caplog) == [
        ("DEBUG", "wanted scope too large; leaving it out of token requests")
    ]
    caplog.clear()
    drive(open_core(), get(wanted=PULL_B))
    assert messages(caplog) == []


# -- edges ----------------------------------------------------------------------------


def test_fetch_ended_for_a_fetch_not_in_flight_is_harmless() -> None:
    core = AuthCore()
    key = FetchKey(0, REALM, "reg", PULL_A)
    core.fetch_ended(key)
    core.fetch_ended(key)
    assert core.in_flight() == frozenset()


def test_known_namespaces_keep_the_latest_origins() -> None:
    core = AuthCore(FlowPolicy(max_origins=2))
    asked: list[str] = []
    core.set_namespaces(lambda host: (asked.append(host), ("a",))[1])
    for n in (1, 2, 3, 3, 2):
        drive(core, get("a", base=URL(f"https://r{n}.example")))
    assert asked == ["r1.example", "r2.example", "r3.example"]


def test_a_narrowed_token_is_no_longer_found_for_what_was_taken_out() -> None:
    core = bearer_core()
    cache(core, PULL_A.union(PULL_B))
    run = drive(
        core,
        get("b"),
        replies=[
            Reply(401, (bearer_line("repository:b:pull", error="insufficient_scope"),)),
            Reply(200),
        ],
        tokens=[ok("TB")],
        now=5.0,
    )
    part = identity(core).partition
    tb = core.cache.get(part, PULL_B, 5.0)
    assert tb is not None
    assert tb.value == "TB"
    assert core.cache.get(part, PULL_B, 5.0, exclude=tb) is None
    assert run.effects[-1] == Resend("Bearer TB")


def test_a_pull_token_is_not_sent_for_a_push() -> None:
    core = bearer_core()
    cache(core, PULL_A)
    run = drive(core, put("a"), tokens=[ok("PUSH")], now=1.0)
    (fetch,) = run.of(FetchToken)
    assert fetch.key.scope == PUSH_A
    assert run.sent == Send("Bearer PUSH")


def test_a_challenge_without_realm_or_service_is_keyed_by_empty_strings() -> None:
    bare = Challenge("bearer", {"scope": "repository:a:pull"})
    core = bearer_core(challenge=bare)
    run = drive(core, get())
    (fetch,) = run.of(FetchToken)
    assert (fetch.key.realm, fetch.key.service) == ("", "")
    assert isinstance(run.outcome, Fail)
    assert isinstance(run.outcome.error, ChallengeError)
    core = bearer_core(challenge=bare)
    cache(core, PULL_A, issued=0.0, life=100.0)
    (refresh,) = drive(core, get(), now=90.0).of(RefreshInBackground)
    assert (refresh.key.realm, refresh.key.service) == ("", "")


def test_a_challenge_without_service_asks_without_one() -> None:
    core = AuthCore()
    _, calls = run_fetch(core, job(core, service=""), [ok()])
    assert "service" not in calls[0].url.query
    core = AuthCore()
    _, calls = run_fetch(core, job(core, service="", entry=ConfigEntry(refresh_token="R")), [ok()])
    assert calls[0].form is not None
    assert "service" not in calls[0].form


def test_a_refresh_grant_to_a_registry_on_this_machine() -> None:
    core = AuthCore()
    base = URL("http://127.0.0.1:5000")
    j = job(
        core, base=base, realm="http://127.0.0.1:5000/token", entry=ConfigEntry(refresh_token="R")
    )
    _, calls = run_fetch(core, j, [ok()])
    assert (calls[0].kind, calls[0].loopback_ok, calls[0].registry) == (
        "post_refresh",
        True,
        "127.0.0.1:5000",
    )


def test_a_mount_asks_for_the_source_repository_too() -> None:
    core = bearer_core()
    url = REG.with_path("/v2/b/blobs/uploads/").with_query({"mount": "sha256:ab", "from": "a"})
    run = drive(core, RequestFacts("POST", url), tokens=[ok()])
    (fetch,) = run.of(FetchToken)
    assert fetch.key.scope == parse_scope("repository:b:pull,push repository:a:pull")


def test_a_fetch_failing_with_any_error_fails_the_request() -> None:
    core = bearer_core()
    error = OCIAuthError("the adapter's own", registry=HOST)
    run = drive(core, get(), fetch=lambda _: error)
    assert run.outcome == Fail(error)


def test_insufficient_scope_from_a_cdn_origin_narrows_nothing_of_ours() -> None:
    core = AuthCore()
    cdn = URL("https://cdn.example/blob")
    line = bearer_line(realm="https://cdn.example/token", error="insufficient_scope")
    run = drive(
        core, RequestFacts("GET", cdn), replies=[Reply(401, (line,)), Reply(200)], tokens=[ok()]
    )
    assert run.effects[-1] == Resend("Bearer T1")
    assert isinstance(run.outcome, Pass)


@pytest.mark.parametrize(
    ("evict_at", "coalesce"),
    [(LookupCredentials, True), (LookupCredentials, False), (Send, True)],
)
def test_an_origin_evicted_while_a_request_waits_is_met_again(
    evict_at: type, coalesce: bool
) -> None:
    core = AuthCore(FlowPolicy(max_origins=1, coalesce_first_contact=coalesce))
    r1 = URL("https://r1.example")
    flow = core.request_flow(get(base=r1))
    value: object = None
    effect = core.resume(flow, value, 0.0)
    while not isinstance(effect, FetchToken):
        if isinstance(effect, evict_at):
            core.origin_of(URL("https://r2.example/v2/"))  # evicts r1
            assert core.origins.get(r1) is None
        value = {
            LookupCredentials: CREDS,
            Send: Reply(401, (bearer_line(realm="https://r1.example/token"),)),
        }.get(type(effect))
        effect = core.resume(flow, value, 0.0)
    assert effect.job.origin.url == r1
    assert effect.job.origin.host == "r1.example"


# -- what a refusal says ---------------------------------------------------------

FROM_FILE = "config file /home/me/.docker/config.json, key 'reg.example'"
LOOKED = "looked in /home/me/.docker/config.json"


def refused(
    entry: ConfigEntry, source: str, realm: str = REALM, status: int = 401
) -> TokenServerError:
    core = AuthCore()
    got, _ = run_fetch(
        core, job(core, entry=entry, realm=realm, source=source), [TokenReply(status)]
    )
    assert isinstance(got, TokenServerError)
    assert got.status == status
    assert "secret" not in str(got)
    assert "RT" not in str(got)
    return got


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_password_names_the_user_where_it_came_from_and_the_realms_port(
    status: int,
) -> None:
    got = refused(CREDS, FROM_FILE, realm="https://auth.reg.example:8443/token", status=status)
    assert str(got) == (
        "token server auth.reg.example:8443 refused the credentials of user 'alice' for "
        f"registry reg.example (from {FROM_FILE}): {status}"
    )
    assert (got.username, got.credential_source) == ("alice", FROM_FILE)
    assert (got.anonymous, got.credentials_found) == (False, True)


def test_a_refused_refresh_token_is_named_as_such() -> None:
    got = refused(ConfigEntry(refresh_token="RT"), "helper docker-credential-pass")
    assert str(got) == (
        "token server reg.example refused the refresh token for registry reg.example "
        "(from helper docker-credential-pass): 401"
    )
    assert not got.anonymous


def test_an_anonymous_request_refused_says_no_credentials_were_found_and_where_it_looked() -> None:
    got = refused(NO_CREDS, LOOKED)
    assert str(got) == (
        "token server reg.example answered 401 to an anonymous request for registry "
        f"reg.example: no credentials were found ({LOOKED})"
    )
    assert (got.username, got.credential_source) == ("", LOOKED)
    assert (got.anonymous, got.credentials_found) == (True, False)


def test_credentials_the_realm_is_not_trusted_with_are_named_as_withheld() -> None:
    got = refused(CREDS, FROM_FILE, realm=FOREIGN_REALM)
    assert str(got) == (
        "token server auth.other.test answered 401 to an anonymous request for registry "
        "reg.example: the realm is not trusted with the credentials of user 'alice' "
        f"(from {FROM_FILE})"
    )
    assert (got.anonymous, got.credentials_found, got.username) == (True, True, "alice")


def test_credentials_without_a_password_are_found_but_not_usable() -> None:
    got = refused(ConfigEntry(username="alice"), FROM_FILE)
    assert str(got).endswith(
        f"the credentials of user 'alice' (from {FROM_FILE}) hold no password for a token request"
    )
    assert (got.anonymous, got.credentials_found) == (True, True)


def test_a_username_from_a_file_is_escaped_and_bounded_in_messages() -> None:
    got = refused(ConfigEntry(username="eve\x1b[31m" + "x" * 300, password="secret"), "")
    assert "\x1b" not in str(got)
    assert "'eve\\x1b[31m" in str(got)
    assert "x" * 257 not in str(got)
    assert str(got).endswith("'... for registry reg.example: 401")  # no source, no "(from"


def test_other_statuses_say_only_what_was_answered_with_the_realms_port() -> None:
    got = refused(CREDS, FROM_FILE, realm="https://reg.example:41234/token", status=500)
    assert str(got) == "token server reg.example:41234 for reg.example answered 500"
    assert (got.username, got.credential_source, got.anonymous) == ("alice", FROM_FILE, False)


def test_the_lookups_answer_gives_the_identity_its_source() -> None:
    core = bearer_core(FlowPolicy(authorize_ahead=False))
    run = drive(
        core,
        get(),
        entry=LookupAnswer(CREDS, FROM_FILE),
        replies=[Reply(401, (bearer_line(),))],
        tokens=[TokenReply(401)],
    )
    assert isinstance(run.outcome, Fail)
    assert isinstance(run.outcome.error, TokenServerError)
    assert run.outcome.error.credential_source == FROM_FILE
    ident = core._identities[(core.origin_of(REG).key, "")]
    assert (ident.source, ident.found) == (FROM_FILE, True)
    assert "secret" not in repr(ident)


def denied(entry: ConfigEntry | LookupAnswer, realm: str = REALM) -> Deny:
    core = bearer_core(FlowPolicy(authorize_ahead=False))
    line = bearer_line(realm=realm)
    run = drive(
        core,
        get(),
        entry=entry,
        replies=[Reply(401, (line,)), Reply(401, (line,))],
        tokens=[ok("T1")],
    )
    assert isinstance(run.outcome, Deny)
    assert core.stats.rewritten_403 == 1
    return run.outcome


def test_a_denied_token_asked_for_anonymously_says_no_credentials_were_found(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("INFO", logger="aociauth"):
        deny = denied(LookupAnswer(NO_CREDS, LOOKED))
    assert deny.reason == (
        f"registry reg.example refused a token asked for anonymously: no credentials were found "
        f"({LOOKED})"
    )
    assert deny.requester is not None
    assert (deny.requester.anonymous, deny.requester.found) == (True, False)
    assert f"answering 403 DENIED: {deny.reason}" in caplog.messages


def test_a_denied_token_issued_to_credentials_names_whose_and_where_from() -> None:
    deny = denied(LookupAnswer(CREDS, FROM_FILE))
    assert deny.reason == (
        "registry reg.example refused a token issued to the credentials of user 'alice' "
        f"(from {FROM_FILE})"
    )
    assert deny.requester is not None
    assert (deny.requester.how, deny.requester.username) == ("basic", "alice")


def test_a_denied_token_the_realm_was_not_trusted_with_credentials_for() -> None:
    deny = denied(LookupAnswer(CREDS, FROM_FILE), realm=FOREIGN_REALM)
    assert deny.reason == (
        "registry reg.example refused a token asked for anonymously: the realm is not trusted "
        f"with the credentials of user 'alice' (from {FROM_FILE})"
    )


def test_a_token_refused_by_its_own_claims_says_as_whom_it_was_asked() -> None:
    core = bearer_core()
    token = jwt(("repository", "a", ["pull"]))
    run = drive(
        core,
        put(),
        entry=LookupAnswer(CREDS, FROM_FILE),
        replies=[Reply(401, (bearer_line("repository:a:pull,push"),))],
        tokens=[ok(token)],
    )
    assert isinstance(run.outcome, Deny)
    assert core.stats.refused_ahead == 1
    assert "issued to the credentials of user 'alice'" in run.outcome.reason


def test_a_bare_config_entry_still_answers_a_lookup() -> None:
    deny = denied(CREDS)
    assert deny.reason == (
        "registry reg.example refused a token issued to the credentials of user 'alice'"
    )


@pytest.mark.parametrize(
    ("requester", "why"),
    [
        (Requester(HOST, "anonymous"), "no credentials were found"),
        (Requester(HOST, "anonymous", source=LOOKED), f"no credentials were found ({LOOKED})"),
        (
            Requester(HOST, "anonymous", "alice", FROM_FILE, found=True),
            f"the credentials of user 'alice' (from {FROM_FILE}) hold no password for a "
            "token request",
        ),
        (
            Requester(HOST, "withheld", "alice", found=True),
            "the realm is not trusted with the credentials of user 'alice'",
        ),
    ],
)
def test_why_a_token_request_went_anonymously(requester: Requester, why: str) -> None:
    assert requester.anonymous
    assert requester.why_anonymous() == why


@pytest.mark.parametrize(
    ("length", "shown"), [(256, repr("x" * 256)), (257, repr("x" * 256) + "...")]
)
def test_a_name_is_shown_whole_up_to_256_characters(length: int, shown: str) -> None:
    who = Requester(HOST, "basic", "x" * length)
    assert who.credentials() == f"the credentials of user {shown}"


@pytest.mark.parametrize(
    ("entry", "how", "reason"),
    [
        (CREDS, "basic", "issued to the credentials of user 'alice'"),
        (ConfigEntry(refresh_token="RT"), "refresh", "issued to the refresh token"),
        (NO_CREDS, "anonymous", "asked for anonymously: no credentials were found"),
    ],
)
def test_a_denied_token_this_core_did_not_fetch_says_as_whom_it_would_have_asked(
    entry: ConfigEntry, how: How, reason: str
) -> None:
    # Both tokens come from a shared cache (another process fetched them): this core
    # never asked, so the identity says how it would have.
    core = open_core()
    run_fetches: list[FetchToken] = []

    def shared(effect: FetchToken) -> AccessToken | None:
        tok = AccessToken(f"shared-{len(run_fetches)}", PULL_A, 0.0, 300.0)
        run_fetches.append(effect)
        return core.adopt_token(effect.job.identity, tok)

    line = bearer_line()
    run = drive(core, get(), entry=entry, replies=[Reply(401, (line,))] * 3, fetch=shared)
    assert len(run_fetches) == 2
    assert isinstance(run.outcome, Deny)
    assert run.outcome.reason == f"registry reg.example refused a token {reason}"
    found = entry != NO_CREDS
    assert run.outcome.requester == Requester(HOST, how, entry.username, "", found)


@pytest.mark.parametrize(
    ("entry", "realm", "tokens", "how"),
    [
        # A refresh token the token server has no OAuth2 endpoint for (404): the GET goes
        # without credentials, as none usable with it were given.
        (ConfigEntry(refresh_token="RT"), REALM, [TokenReply(404), ok()], "anonymous"),
        (NO_CREDS, FOREIGN_REALM, [ok()], "anonymous"),
        (NO_CREDS, REALM, [ok()], "anonymous"),
        (CREDS, FOREIGN_REALM, [ok()], "withheld"),
        (CREDS, REALM, [ok()], "basic"),
    ],
)
def test_a_denied_token_says_how_this_core_asked_for_it(
    entry: ConfigEntry, realm: str, tokens: list[TokenReply], how: How
) -> None:
    core = open_core()
    line = bearer_line(realm=realm)
    replies = [Reply(401, (line,))] * 2
    run = drive(core, get(), entry=entry, replies=replies, tokens=list(tokens))
    assert [c.authorization for c in run.calls][-1] == (BASIC if how == "basic" else None)
    assert isinstance(run.outcome, Deny)
    assert run.outcome.requester is not None
    assert run.outcome.requester.how == how


def test_a_refresh_token_is_not_adopted_from_an_answer_to_no_credentials() -> None:
    core = AuthCore()
    j = job(core, entry=NO_CREDS)
    _, calls = run_fetch(core, j, [ok("T1", refresh_token="GIVEN-TO-ANYONE")])
    assert calls[0].kind == "get_anonymous"
    assert core.refresh_token(j.identity) == ""


# -- the hot path's memory ------------------------------------------------------


def hot_core(policy: FlowPolicy | None = None) -> tuple[AuthCore, AccessToken]:
    """A Bearer core whose hot path has remembered GET a (token ``cached``)."""
    core = bearer_core(policy)
    tok = cache(core, PULL_A)
    assert drive(core, get()).sent == Send("Bearer cached")
    assert core.ready(get()) is not None
    return core, tok


def test_a_remembered_request_counts_its_token_as_just_used() -> None:
    # The hot path spares TokenCache.touch's call, not its effect: the token a busy
    # repository keeps using is not the one a full cache evicts.
    core, tok = hot_core(FlowPolicy(cache_size=2))
    partition = core.cache.recency[tok]
    core.cache.put(partition, AccessToken("b", PULL_B, 0.0, 1000.0))
    assert core.ready(get()) is not None  # remembered: A is now the newest
    # The cache is full: the least recently used goes.
    core.cache.put(partition, AccessToken("c", parse_scope("repository:c:pull"), 0.0, 1000.0))
    assert tok in core.cache.recency
    assert [t.value for t in core.cache.recency] == ["cached", "c"]


def test_a_remembered_request_counts_its_origin_as_just_used() -> None:
    # Likewise Origins.holds: the origin a busy repository keeps using is not evicted.
    core, _ = hot_core(FlowPolicy(max_origins=2))
    other = URL("https://other.example")
    core.origin_of(other.with_path("/v2/"))
    assert core.ready(get()) is not None
    core.origin_of(URL("https://third.example/v2/"))
    assert [st.host for st in core.origins] == ["reg.example", "third.example"]


def test_a_request_flow_remembers_what_a_cached_token_served() -> None:
    core = bearer_core()
    cache(core, PULL_A)
    assert core._hot == {}
    assert drive(core, get()).sent == Send("Bearer cached")
    # A plain request (no scope of the caller's) is remembered by method and the URL's
    # scheme, host, port as given, path and query; one with a scope of the caller's,
    # under its scopes too.
    where = ("GET", "https", "reg.example", None, "/v2/a/manifests/latest")
    assert get().url == URL(f"https://{where[2]}{where[4]}")
    assert list(core._hot) == [where]
    drive(core, get(wanted=PULL_A))
    assert list(core._hot)[1] == (*where, None, PULL_A)


def test_a_remembered_request_refused_asks_for_its_wanted_scope_too() -> None:
    core = bearer_core()
    cache(core, PULL_A)
    facts = get(wanted=PULL_B)
    drive(core, facts)
    assert core.ready(facts) is not None  # remembered
    line = bearer_line(error="invalid_token")
    run = drive(core, facts, replies=[Reply(401, (line,)), Reply(200)], tokens=[ok("T2")])
    (fetch,) = run.of(FetchToken)
    assert fetch.key.scope == PULL_A.union(PULL_B)
    assert run.effects[-1] == Resend("Bearer T2")


def test_the_same_request_again_takes_the_remembered_token() -> None:
    core, tok = hot_core()
    prep = core.ready(get())
    assert prep is not None
    assert prep.sent is tok
    assert prep.authorization == "Bearer cached"
    assert prep.required == PULL_A
    assert core.stats.requests == core.stats.cache_hits == 3


def test_a_discarded_token_is_not_remembered() -> None:
    core, tok = hot_core()
    core.cache.discard(identity(core).partition, tok)
    assert core.ready(get()) is None


def test_a_flow_told_ready_refused_does_not_ask_ready_again() -> None:
    core, _ = hot_core()
    asked: list[RequestFacts] = []
    ready = core.ready

    def counted(facts: RequestFacts) -> Prepared | None:
        asked.append(facts)
        return ready(facts)

    core.ready = counted  # type: ignore[method-assign]
    assert drive(core, get()).sent == Send("Bearer cached")
    assert asked == [get()]
    # The adapter asked already, and was refused: the flow goes straight to preparing.
    flow = core.request_flow(get(), ready_refused=True)
    assert core.resume(flow, None, 0.0) == Send("Bearer cached")
    assert asked == [get()]


def test_a_token_the_cache_dropped_is_not_remembered() -> None:
    # Nothing but the token changed: the origin and the identity still stand.
    core, tok = hot_core()
    hits = core.stats.cache_hits
    core.cache.discard(core.cache.recency[tok], tok)
    assert core.ready(get()) is None
    assert core._hot == {}
    assert core.stats.cache_hits == hits


def test_a_narrowed_token_is_not_remembered_for_what_it_lost() -> None:
    core = bearer_core()
    both = PULL_A.union(PULL_B)
    tok = cache(core, both)
    assert drive(core, get("b")).sent == Send("Bearer cached")
    core.cache.replace(identity(core).partition, tok, tok.narrowed(PULL_B))
    assert core.ready(get("b")) is None
    prep = core.ready(get("a"))
    assert prep is not None
    assert prep.sent is not tok


def test_a_new_challenge_ends_what_was_remembered() -> None:
    core, _ = hot_core()
    st = core.origin_of(REG)
    core.origins.apply(st, Answered(bearer_challenge(realm="https://reg.example/other")))
    prep = core.ready(get())
    assert prep is not None  # still cached, and decided afresh
    assert prep.st.challenge == bearer_challenge(realm="https://reg.example/other")


def test_another_identity_ends_what_was_remembered() -> None:
    core, _ = hot_core()
    core.adopt(core.origin_of(REG), "", ConfigEntry(username="bob", password="other"))
    assert core.ready(get()) is None  # bob has no token yet


def test_forgotten_credentials_end_what_was_remembered() -> None:
    # A docker login while the program runs: the next request asks the config again,
    # even one the hot path remembers.
    core, _ = hot_core()
    core.forget_credentials()
    assert core.ready(get()) is None
    run = drive(core, get())
    assert len(run.of(LookupCredentials)) == 1
    assert run.sent == Send("Bearer cached")  # the same entry: its token still serves


@pytest.mark.parametrize(
    ("policy", "fresh_until"),
    [
        (FlowPolicy(refresh_ahead=False), 999.0),  # usable: 1 s before expiry
        (FlowPolicy(refresh_ahead=True, refresh_fraction=0.25), 750.0),  # refresh due
    ],
)
def test_what_is_remembered_lasts_while_the_token_is_fresh(
    policy: FlowPolicy, fresh_until: float
) -> None:
    core, _ = hot_core(policy)
    core.now = fresh_until - 0.01
    assert core.ready(get()) is not None
    core.now = fresh_until
    assert core.ready(get()) is None


def test_another_method_url_or_scope_is_decided_afresh() -> None:
    core, _ = hot_core()
    hits = core.stats.cache_hits
    assert core.ready(get(wanted=PULL_B)) is not None  # cached token, a new key
    assert core.ready(put()) is None  # push is not cached
    queried = get()._replace(url=get().url.with_query(n="1"))
    assert core.ready(queried) is not None  # another URL, the same token
    assert core.stats.cache_hits == hits + 2
    assert len(core._hot) == 3
    # The same path elsewhere is another origin, whose state is not this one's.
    for elsewhere in ("http://reg.example", "https://reg.example:8443", "https://other.example"):
        moved = get()._replace(url=URL(elsewhere).with_path(get().url.path))
        assert core.ready(moved) is None
    assert len(core._hot) == 3
    # The port given is the config's "host:port": decided afresh, from the same origin.
    explicit = get()._replace(url=URL("https://reg.example:443").with_path(get().url.path))
    assert core.ready(explicit) is not None
    assert core.stats.cache_hits == hits + 3
    assert len(core._hot) == 4
    # User info and fragment decide nothing (aiohttp takes the user info out).
    for same in ("https://u@reg.example", "https://reg.example"):
        spelt = get()._replace(url=URL(same).with_path(get().url.path).with_fragment("f"))
        assert core.ready(spelt) is not None
    assert len(core._hot) == 4


def test_the_memory_is_bounded() -> None:
    core = bearer_core()
    cache(core, unlimited_scope())
    for n in range(HOT_ENTRIES + 10):
        assert core.ready(get(f"r{n}")) is not None
    assert len(core._hot) == HOT_ENTRIES
    assert core.ready(get("r0")) is not None  # forgotten, decided afresh


def test_a_remembered_hit_keeps_its_token_and_origin_recently_used() -> None:
    core = bearer_core(FlowPolicy(cache_size=2, max_origins=2))
    a = cache(core, PULL_A)
    assert core.ready(get("a")) is not None
    cache(core, PULL_B, "b")
    assert core.ready(get("a")) is not None  # from memory: a is used after b
    core.origin_of(URL("https://other.example"))  # the registry stays, being used
    cache(core, parse_scope("repository:c:pull"), "c")  # evicts b, the least used
    part = identity(core).partition
    assert core.cache.get(part, PULL_A, 0.0) is a
    assert core.cache.get(part, PULL_B, 0.0) is None
    assert core.origins.get(REG) is not None


# -- token servers that read one scope parameter --------------------------------


def scope_params(call: TokenCall) -> list[str]:
    """The scope parameters of a token call: its GET query's, or its POST form's one."""
    if call.form is not None:
        return [dict(call.form)["scope"]]
    return call.url.query.getall("scope", [])


def test_a_wide_grant_without_the_required_scope_asks_for_it_alone() -> None:
    # Older GitLab keeps the last of several scope parameters.
    core = AuthCore()
    j = job(core, required=PULL_A, wanted=PULL_B.union(PULL_A))
    replies = [
        ok(jwt(("repository", "b", ["pull"])), refresh_token="R1"),
        ok(jwt(("repository", "a", ["pull"])), refresh_token="R2"),
    ]
    got, calls = run_fetch(core, j, replies, now=1.0)
    assert [scope_params(c) for c in calls] == [
        ["repository:a:pull", "repository:b:pull"],
        ["repository:a:pull"],  # the refresh grant, with the first answer's refresh token
    ]
    assert [c.kind for c in calls] == ["get_basic", "post_refresh"]
    assert isinstance(got, AccessToken)
    assert got.scope == PULL_A
    assert core.refresh_token(j.identity) == "R2"  # from the answer kept
    st = core.origins.get(REG)
    assert st is not None
    assert st.narrow_only
    assert st.one_scope


@pytest.mark.parametrize(
    ("entry", "first", "narrow", "kept"),
    [
        (CREDS, "R1", "", "R1"),  # the narrow answer names none: the first one's stands
        (NO_CREDS, "GIVEN", "GIVEN-TOO", ""),  # answers to no credentials: not ours to keep
    ],
)
def test_the_narrow_answers_refresh_token_is_kept_only_when_it_is_ours(
    entry: ConfigEntry, first: str, narrow: str, kept: str
) -> None:
    core = AuthCore()
    j = job(core, entry=entry, required=PULL_A, wanted=PULL_B.union(PULL_A))
    replies = [
        ok(jwt(("repository", "b", ["pull"])), refresh_token=first),
        ok(jwt(("repository", "a", ["pull"])), refresh_token=narrow),
    ]
    got, calls = run_fetch(core, j, replies)
    assert len(calls) == 2
    assert isinstance(got, AccessToken)
    assert got.scope == PULL_A
    assert core.refresh_token(j.identity) == kept


def test_the_log_tells_a_token_server_that_reads_one_scope(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="aociauth")
    core = AuthCore()
    j = job(core, required=PULL_A, wanted=PULL_B.union(PULL_A))
    run_fetch(
        core, j, [ok(jwt(("repository", "b", ["pull"]))), ok(jwt(("repository", "a", ["pull"])))]
    )
    assert ("DEBUG", "token server for reg.example reads one scope parameter") in messages(caplog)


def test_a_one_scope_origin_is_asked_narrow_and_joined_from_then_on() -> None:
    core = AuthCore()
    core.origins.apply(core.origin_of(REG), WideScopeRefused(one_scope=True))
    mount = parse_scope("repository:a:pull,push repository:b:pull")
    j = job(core, required=mount, wanted=mount.union(parse_scope("repository:c:pull")))
    claims = jwt(("repository", "a", ["pull", "push"]), ("repository", "b", ["pull"]))
    got, calls = run_fetch(core, j, [ok(claims)])
    assert [scope_params(c) for c in calls] == [["repository:a:pull,push repository:b:pull"]]
    assert isinstance(got, AccessToken)


def test_a_mount_granted_in_part_is_asked_again_in_one_parameter() -> None:
    core = AuthCore()
    mount = parse_scope("repository:a:pull,push repository:b:pull")
    j = job(core, required=mount)
    last = ok(jwt(("repository", "b", ["pull"])))
    both = ok(jwt(("repository", "a", ["pull", "push"]), ("repository", "b", ["pull"])))
    got, calls = run_fetch(core, j, [last, both])
    assert [scope_params(c) for c in calls] == [
        ["repository:a:pull,push", "repository:b:pull"],
        ["repository:a:pull,push repository:b:pull"],
    ]
    assert isinstance(got, AccessToken)
    assert got.scope == mount


def test_a_scope_denied_however_asked_keeps_the_first_answer_and_learns_nothing() -> None:
    core = AuthCore()
    j = job(core, required=PULL_A, wanted=PULL_A.union(PULL_B))
    only_b = ok(jwt(("repository", "b", ["pull"])))
    got, calls = run_fetch(core, j, [only_b, ok(jwt())])
    assert len(calls) == 2
    assert isinstance(got, AccessToken)
    assert got.scope == PULL_B  # what the first answer granted, cached as such
    st = core.origins.get(REG)
    assert st is not None
    assert not st.narrow_only
    assert not st.one_scope


@pytest.mark.parametrize(
    ("required", "wanted", "token"),
    [
        (PULL_A, PULL_A, jwt()),  # one parameter went: nothing to learn
        (PULL_A, PULL_A.union(PULL_B), jwt(("repository", "a", ["pull"]))),  # required granted
        (PULL_A, PULL_A.union(PULL_B), "opaque-token"),  # no claims to read
    ],
)
def test_no_second_request_when_there_is_nothing_to_learn(
    required: Scope, wanted: Scope, token: str
) -> None:
    core = AuthCore()
    _, calls = run_fetch(core, job(core, required=required, wanted=wanted), [ok(token)])
    assert len(calls) == 1


def test_a_one_scope_origin_denying_part_of_a_mount_is_not_asked_again() -> None:
    core = AuthCore()
    core.origins.apply(core.origin_of(REG), WideScopeRefused(one_scope=True))
    mount = parse_scope("repository:a:pull,push repository:b:pull")
    got, calls = run_fetch(
        core, job(core, required=mount), [ok(jwt(("repository", "b", ["pull"])))]
    )
    assert len(calls) == 1  # already asked in one parameter: the denial is real
    assert isinstance(got, AccessToken)
    assert got.scope == PULL_B


# -- coalescing concurrent misses -------------------------------------------------


def repo(n: int) -> Scope:
    return parse_scope(f"repository:r{n}:pull")


class Flows:
    """Several request flows of one core, stepped by hand as a driver would."""

    def __init__(self, core: AuthCore) -> None:
        self.core = core
        self.flows: list[Any] = []

    def begin(self, facts: RequestFacts, entry: ConfigEntry = CREDS) -> object:
        flow = self.core.request_flow(facts)
        self.flows.append(flow)
        effect = self.core.resume(flow, None, 0.0)
        while isinstance(effect, LookupCredentials):
            effect = self.core.resume(flow, entry, 0.0)
        return effect

    def step(self, i: int, value: object) -> object:
        """The flow's next effect once sent ``value`` (past a PrepareResend)."""
        effect = self.core.resume(self.flows[i], value, 0.0)
        if isinstance(effect, PrepareResend):
            effect = self.core.resume(self.flows[i], None, 0.0)
        return effect

    def challenge_first(self) -> FetchToken:
        """The first flow's next effect once the registry challenged it for r0 (a
        token fetch, checked)."""
        fetch = self.step(0, Reply(401, (bearer_line("repository:r0:pull"),)))
        assert isinstance(fetch, FetchToken)
        return fetch


def test_the_probes_token_request_asks_for_the_waiters_scopes_too() -> None:
    core = AuthCore()
    f = Flows(core)
    assert f.begin(get("r0")) == Send(None, probe=True)
    for n in range(1, 4):
        assert f.begin(get(f"r{n}")) == AwaitProbe(REG)
    fetch = f.challenge_first()
    assert fetch.key.scope == repo(0).union(repo(1)).union(repo(2)).union(repo(3))
    assert fetch.job.required == repo(0)
    assert core.stats.coalesced_scopes == 3


def test_the_coalesced_scope_is_capped_in_items_in_the_order_held() -> None:
    core = AuthCore(FlowPolicy(coalesce_token_requests=3))
    f = Flows(core)
    f.begin(get("r0"))
    for n in range(1, 6):
        f.begin(get(f"r{n}"))
    fetch = f.challenge_first()
    assert fetch.key.scope == repo(0).union(repo(1)).union(repo(2))


def test_the_coalesced_scope_is_capped_in_bytes() -> None:
    core = AuthCore(FlowPolicy(max_scope_bytes=40))
    f = Flows(core)
    f.begin(get("r0"))
    f.begin(get("r1"))
    f.begin(get("r2"))
    fetch = f.challenge_first()
    assert fetch.key.scope == repo(0).union(repo(1))  # 17 + 18 bytes; a third is 53


def test_a_miss_that_cannot_join_waits_once_then_shares_the_next_request() -> None:
    core = bearer_core(AFTER_401)
    f = Flows(core)
    first = f.begin(get("r0"))
    assert first == Send(None)
    busy = f.challenge_first()
    waits = []
    for n in (1, 2, 3):
        assert f.begin(get(f"r{n}")) == Send(None)
        waits.append(f.step(n, Reply(401, (bearer_line(f"repository:r{n}:pull"),))))
    # Each waits for the fetch out, which it cannot join (the driver joins it).
    assert [w.key for w in waits if isinstance(w, FetchToken)] == [busy.key] * 3
    assert core.stats.fetch_waits == 3
    tok = AccessToken("T0", repo(0), 0.0, 300.0)
    core.cache.put(identity(core).partition, tok)
    core.fetch_ended(busy.key)
    nxt = f.step(1, tok)
    assert isinstance(nxt, FetchToken)
    assert nxt.key.scope == repo(1).union(repo(2)).union(repo(3))
    for n in (2, 3):
        joined = f.step(n, tok)
        assert isinstance(joined, FetchToken)
        assert joined.key == nxt.key  # the same fetch: one token request for the three
    assert core.stats.fetch_waits == 3  # nobody waits twice


def test_a_joined_fetch_that_got_less_is_followed_by_the_requests_own() -> None:
    core = AuthCore()
    f = Flows(core)
    f.begin(get("r0"))
    f.begin(get("r1"))
    fetch = f.challenge_first()
    core.origins.apply(core.origin_of(REG), Answered(bearer_challenge("repository:r0:pull")))
    core.probe_ended(REG)
    narrowed = AccessToken("T0", repo(0), 0.0, 300.0)  # the wide scope was refused
    joined = f.step(1, None)
    assert isinstance(joined, FetchToken)
    assert joined.key == fetch.key
    core.fetch_ended(fetch.key)
    # Ahead of sending, the shared fetch's lack is not worth a fetch of its own...
    assert f.step(1, narrowed) == Send(None)
    # ...after the registry's challenge, it is.
    own = f.step(1, Reply(401, (bearer_line("repository:r1:pull"),)))
    assert isinstance(own, FetchToken)
    assert own.key.scope == repo(1)
    assert own.job.required == repo(1)


def test_scopes_never_cross_identities() -> None:
    core = AuthCore()
    core.set_namespaces(lambda host: ("team",))  # team/ has credentials of its own
    f = Flows(core)
    f.begin(get("r0"))
    f.begin(get("team/x"), entry=ConfigEntry(username="bob", password="other"))
    fetch = f.challenge_first()
    assert fetch.key.scope == repo(0)


def test_nothing_is_coalesced_for_a_picky_server_or_when_turned_off() -> None:
    for policy, narrow in ((FlowPolicy(), True), (FlowPolicy(coalesce_token_requests=1), False)):
        core = AuthCore(policy)
        if narrow:
            core.origins.apply(core.origin_of(REG), WideScopeRefused())
        f = Flows(core)
        f.begin(get("r0"))
        f.begin(get("r1"))
        fetch = f.challenge_first()
        assert fetch.key.scope == repo(0)


def test_two_requests_are_enough_to_share_a_token_request() -> None:
    core = AuthCore(FlowPolicy(coalesce_token_requests=2))
    f = Flows(core)
    f.begin(get("r0"))
    f.begin(get("r1"))
    fetch = f.challenge_first()
    assert fetch.key.scope == repo(0).union(repo(1))


def test_a_waiter_the_token_request_covers_is_neither_added_nor_counted() -> None:
    core = AuthCore()
    f = Flows(core)
    f.begin(get("r0"))
    f.begin(get("r0"))  # the probe's own scope
    f.begin(get("r1"))  # held after it: still asked for
    fetch = f.challenge_first()
    assert fetch.key.scope == repo(0).union(repo(1))
    assert core.stats.coalesced_scopes == 1


@pytest.mark.parametrize(("first", "second"), [(unlimited_scope(), repo(1)), (repo(0), None)])
def test_nothing_is_added_to_the_unlimited_scope_nor_is_it_added(
    first: Scope, second: Scope | None
) -> None:
    # RequestInfo may ask for the unlimited scope: that request asks for it alone, and a
    # waiter asking for it is never merged into another request's token request.
    core = AuthCore()
    f = Flows(core)
    f.begin(get("r0", info_scope=first))
    f.begin(get("r1", info_scope=second if second is not None else unlimited_scope()))
    fetch = f.challenge_first()
    assert fetch.key.scope == (unlimited_scope() if first.is_unlimited() else repo(0))
    assert core.stats.coalesced_scopes == 0


@pytest.mark.parametrize(("max_bytes", "shared"), [(36, False), (37, True)])
def test_the_coalesced_scope_may_fill_max_scope_bytes_exactly(max_bytes: int, shared: bool) -> None:
    core = AuthCore(FlowPolicy(max_scope_bytes=max_bytes))
    f = Flows(core)
    f.begin(get("r0"))
    f.begin(get("r1"))
    fetch = f.challenge_first()
    both = repo(0).union(repo(1))
    assert len(str(both)) == 37
    assert fetch.key.scope == (both if shared else repo(0))


def test_coalesced_scopes_are_counted_over_every_token_request() -> None:
    core = AuthCore()
    f = Flows(core)
    other = URL("https://other.example")
    for base in (REG, other):
        f.begin(get("r0", base=base))
        f.begin(get("r1", base=base))
    for i, base in ((0, REG), (2, other)):
        line = bearer_line("repository:r0:pull", realm=f"{base}/token")
        fetch = f.step(i, Reply(401, (line,)))
        assert isinstance(fetch, FetchToken)
        assert fetch.key.scope == repo(0).union(repo(1))
    assert core.stats.coalesced_scopes == 2


def test_a_request_that_is_no_registry_call_adds_nothing_to_the_probes_token_request() -> None:
    core = AuthCore()
    f = Flows(core)
    assert f.begin(get("r0")) == Send(None, probe=True)
    other = RequestFacts("GET", REG.with_path("/not/the/api"), wanted=repo(1))
    assert f.begin(other) == AwaitProbe(REG)
    fetch = f.challenge_first()
    assert fetch.key.scope == repo(0)


@pytest.mark.parametrize("ahead", [False, True])
def test_a_waiter_takes_the_token_another_waiter_fetched_meanwhile(ahead: bool) -> None:
    core = bearer_core(FlowPolicy(authorize_ahead=ahead))
    core.origins.apply(core.origin_of(REG), FetchAheadWorked())  # no first fetch to wait for
    part = identity(core).partition
    f = Flows(core)

    def fetch_of(n: int) -> FetchToken:
        """Request n's first FetchToken: ahead, or after its 401."""
        effect = f.begin(get(f"r{n}"))
        if not ahead:
            assert effect == Send(None)
            effect = f.step(n, Reply(401, (bearer_line(f"repository:r{n}:pull"),)))
        assert isinstance(effect, FetchToken)
        return effect

    busy = fetch_of(0)
    waits = [fetch_of(1), fetch_of(2)]
    assert core.stats.fetch_waits == 2
    for n, w in enumerate(waits, 1):
        # The fetch out, as its own job: were the adapter to run it (its runner was
        # cancelled), it would ask for what the fetch out asks for.
        assert w.key == busy.key
        assert (w.job.origin.url, w.job.identity) == (REG, busy.job.identity)
        assert w.job.challenge == (
            bearer_challenge(f"repository:r{n}:pull") if not ahead else bearer_challenge()
        )
        assert (w.job.required, w.job.wanted) == (busy.key.scope, busy.key.scope)
    core.fetch_ended(busy.key)
    t0 = AccessToken("T0", repo(0), 0.0, 300.0)
    core.cache.put(part, t0)
    shared = f.step(1, t0)
    assert isinstance(shared, FetchToken)
    assert shared.key.scope == repo(1).union(repo(2))
    core.cache.put(part, AccessToken("T12", shared.key.scope, 0.0, 300.0))
    core.fetch_ended(shared.key)
    # Request 2 resumes once that fetch has ended: its token is cached, issued as the
    # request went out (not before), so no fetch of its own.
    assert f.step(2, t0) == (Send("Bearer T12") if ahead else Resend("Bearer T12"))
    assert core.in_flight() == frozenset()


def test_a_picky_servers_fetch_claims_only_the_required_scope() -> None:
    core = bearer_core()
    core.origins.apply(core.origin_of(REG), WideScopeRefused())
    run = drive(core, get("a", wanted=PULL_B), tokens=[ok()])
    (fetch,) = run.of(FetchToken)
    assert fetch.key.scope == PULL_A  # a key claiming b would let others join in vain
    assert fetch.job.wanted == PULL_A


def test_a_waiter_that_goes_away_is_no_longer_asked_for() -> None:
    core = AuthCore()
    f = Flows(core)
    f.begin(get("r0"))
    f.begin(get("r1"))
    f.begin(get("r2"))
    f.flows[1].close()  # cancelled while it waited
    fetch = f.challenge_first()
    assert fetch.key.scope == repo(0).union(repo(2))


def test_after_a_401_a_joined_fetch_that_got_less_is_followed_by_the_requests_own() -> None:
    core = bearer_core(AFTER_401)
    f = Flows(core)
    for n in (0, 1, 2):
        assert f.begin(get(f"r{n}")) == Send(None)
    busy = f.challenge_first()
    for n in (1, 2):
        waiting = f.step(n, Reply(401, (bearer_line(f"repository:r{n}:pull"),)))
        assert isinstance(waiting, FetchToken)
        assert waiting.key == busy.key
    core.fetch_ended(busy.key)
    r0 = AccessToken("T0", repo(0), 0.0, 300.0)
    batch = f.step(1, r0)
    assert isinstance(batch, FetchToken)
    assert batch.key.scope == repo(1).union(repo(2))
    joined = f.step(2, r0)
    assert isinstance(joined, FetchToken)
    assert joined.key == batch.key
    # The wide request was refused and narrowed to r1's own scope: r2 asks for its own.
    core.fetch_ended(batch.key)
    own = f.step(2, AccessToken("T1", repo(1), 0.0, 300.0))
    assert isinstance(own, FetchToken)
    assert own.key.scope == repo(2)
    assert own.job.required == repo(2)


@pytest.mark.parametrize(("service", "other_fetch"), [("reg", False), ("", False), ("reg", True)])
def test_a_refused_token_whose_shared_fetch_got_less_is_replaced_by_a_fetch_of_its_own(
    service: str, other_fetch: bool
) -> None:
    core = bearer_core(AFTER_401)
    part = identity(core).partition
    refused = AccessToken("refused", repo(2), 0.0, 300.0)
    core.cache.put(part, refused)
    f = Flows(core)

    def challenged(n: int, **extra: str) -> Reply:
        return Reply(401, (bearer_line(f"repository:r{n}:pull", service=service, **extra),))

    assert f.begin(get("r1", wanted=repo(2))) == Send(None)
    wide = f.step(0, challenged(1))
    assert isinstance(wide, FetchToken)
    assert wide.key.scope == repo(1).union(repo(2))
    assert f.begin(get("r2")) == Send("Bearer refused")
    joined = f.step(1, challenged(2, error="invalid_token"))
    assert isinstance(joined, FetchToken)
    assert joined.key == wide.key  # it asks for r2 too: joined
    core.fetch_ended(wide.key)  # granted r1 alone
    expected = FetchKey(part, REALM, service, repo(2))
    if other_fetch:
        # Meanwhile a request of its own asks for r2 (and r3): that fetch is joined.
        assert f.begin(get("r2", wanted=repo(3))) == Send(None)
        other = f.step(2, challenged(2))
        assert isinstance(other, FetchToken)
        expected = other.key
        assert expected.scope == repo(2).union(repo(3))
    own = f.step(1, AccessToken("T1", repo(1), 0.0, 300.0))
    assert isinstance(own, FetchToken)
    assert own.key == expected
    assert expected in core.in_flight()
    job = own.job
    assert (job.origin.url, job.identity.partition) == (REG, part)
    assert job.challenge.scheme == "bearer"
    assert job.challenge.params == {
        "realm": REALM,
        **({"service": service} if service else {}),
        "scope": "repository:r2:pull",
        "error": "invalid_token",
    }
    assert (job.required, job.wanted, job.replacing) == (repo(2), repo(2), refused)


def test_a_fetch_of_its_own_that_grants_less_is_sent_as_it_is() -> None:
    # Not joined: the fetch asked for this request's scope itself (and, refused wide, for
    # it alone); asking again would get the same.
    core = bearer_core(AFTER_401)
    less = AccessToken("less", PULL_B, 0.0, 300.0)
    line = bearer_line()
    run = drive(core, get("a"), replies=[Reply(401, (line,))] * 2, fetch=lambda _: less)
    assert len(run.of(FetchToken)) == 1
    assert run.of(Resend) == [Resend("Bearer less")]
    assert isinstance(run.outcome, Deny)


def test_a_challenge_without_a_scope_is_answered_for_the_requests_own_scope() -> None:
    # Quay's challenge names no scope; a token of another repository, fetched after
    # this request went out, must not be taken for it.
    no_scope = 'Bearer realm="https://reg.example/token",service="reg"'
    core = bearer_core(AFTER_401, challenge=Challenge("bearer", {"realm": REALM, "service": "reg"}))
    flow = core.request_flow(get("a"))
    value: object = None
    effect = core.resume(flow, value, 1.0)
    while not isinstance(effect, Send):
        effect = core.resume(flow, CREDS if isinstance(effect, LookupCredentials) else None, 1.0)
    core.cache.put(identity(core).partition, AccessToken("B", PULL_B, 2.0, 500.0))
    effect = core.resume(flow, Reply(401, (no_scope,)), 3.0)
    if isinstance(effect, PrepareResend):
        effect = core.resume(flow, None, 3.0)
    assert isinstance(effect, FetchToken)
    assert effect.job.required == PULL_A


def test_a_joiner_of_a_one_scope_servers_fetch_fetches_its_own_ahead() -> None:
    core = AuthCore()
    f = Flows(core)
    f.begin(get("r0"))
    f.begin(get("r1"))
    fetch = f.challenge_first()
    assert fetch.key.scope == repo(0).union(repo(1))
    core.probe_ended(REG)
    joined = f.step(1, None)
    assert isinstance(joined, FetchToken)
    assert joined.key == fetch.key
    # The fetch learnt that the token server reads one scope parameter (fetch_flow).
    core.origins.apply(core.origin_of(REG), WideScopeRefused(one_scope=True))
    core.fetch_ended(fetch.key)
    own = f.step(1, AccessToken("T0", repo(0), 0.0, 300.0))
    assert isinstance(own, FetchToken)  # ahead: no request sent without a token
    assert own.key.scope == repo(1)


# -- hit: the fast lane --------------------------------------------------------------

WHERE = ("GET", "https", "reg.example", None, "/v2/a/manifests/latest")


def test_hit_answers_a_plain_request_the_core_remembers() -> None:
    core, tok = hot_core()
    core.hits_until = math.inf
    hits = core.stats.cache_hits
    hit = core.hit("GET", get().url, 0.0)
    assert hit is not None
    assert hit is core._hot[WHERE]
    assert (hit.authorization, hit.tok, hit.query) == ("Bearer cached", tok, False)
    assert core.stats.cache_hits == core.stats.requests == hits + 1
    # What ready would say of the same request, as a Prepared.
    assert core.prepared(hit, get(), 5.0) == core.ready(get())._replace(at=5.0)  # type: ignore[union-attr]
    # Anything the core has not remembered is for ready.
    assert core.hit("PUT", get().url, 0.0) is None
    assert core.hit("GET", get("b").url, 0.0) is None
    assert core.stats.cache_hits == hits + 2


def test_hit_refuses_from_the_time_the_adapter_set() -> None:
    # The adapter's own work first (its config check): hit refuses, and the whole path
    # (ready) still finds what is remembered.
    core, _ = hot_core()
    assert core.hits_until == -math.inf  # until the adapter says so
    assert core.hit("GET", get().url, 0.0) is None
    core.hits_until = 10.0
    assert core.hit("GET", get().url, 9.99) is not None
    assert core.hit("GET", get().url, 10.0) is None
    assert WHERE in core._hot
    core.now = 10.0
    assert core.ready(get()) is not None


def test_hit_says_when_the_url_has_a_query() -> None:
    core, _ = hot_core()
    core.hits_until = math.inf
    queried = get()._replace(url=get().url.with_query({"X-Amz-Signature": "s"}))
    assert core.ready(queried) is not None
    hit = core.hit("GET", queried.url, 0.0)
    assert hit is not None
    assert hit.query


@pytest.mark.parametrize("status", [200, 201, 202, 204, 206, 299])
def test_a_hit_answered_below_300_needs_no_settle(status: int) -> None:
    # The adapter skips settle for these: it must change nothing.
    core, _ = hot_core()
    core.hits_until = math.inf
    hit = core.hit("GET", get().url, 0.0)
    assert hit is not None
    states, stats = list(core.origins), dataclasses.replace(core.stats)
    assert core.settle(core.prepared(hit, get(), 0.0), status) == Pass()
    assert list(core.origins) == states
    assert all(a is b for a, b in zip(core.origins, states, strict=True))
    assert core.stats == stats
    assert core.hit("GET", get().url, 0.0) is hit


def test_a_hit_answered_429_is_counted() -> None:
    core, _ = hot_core()
    core.hits_until = math.inf
    hit = core.hit("GET", get().url, 0.0)
    assert hit is not None
    core.settle(core.prepared(hit, get(), 0.0), 429)
    assert core.stats.registry_429s == 1


def test_an_evicted_origin_ends_what_was_remembered() -> None:
    core, _ = hot_core(FlowPolicy(max_origins=1))
    core.origin_of(URL("https://other.example/v2/"))  # evicts reg.example
    assert core.ready(get()) is None  # met afresh: a first registry call
    assert WHERE not in core._hot


def test_an_identity_past_the_bound_ends_what_was_remembered() -> None:
    core, _ = hot_core(FlowPolicy(max_origins=1))
    core.adopt(core.origin_of(REG), "other", CREDS)  # evicts the identity of ""
    assert core.ready(get()) is None  # the config is asked again
    assert WHERE not in core._hot


def test_meeting_more_leaves_what_was_remembered_standing() -> None:
    # Only a change ends a remembered decision: new origins and identities are not one.
    core, _ = hot_core()
    hit = core._hot[WHERE]
    other = core.origin_of(URL("https://other.example/v2/"))
    core.adopt(other, "", CREDS)
    core.adopt(core.origin_of(REG), "team", CREDS)
    assert core.ready(get()) is not None
    assert core._hot[WHERE] is hit


def remembered(core: AuthCore, path: str, now: float) -> Prepared:
    """The Prepared of GET a at ``now``, remembered, as ``ready`` or ``hit`` gives it."""
    core.now, core.hits_until = now, math.inf
    if path == "ready":
        prep = core.ready(get())
    else:
        hit = core.hit("GET", get().url, now)
        prep = None if hit is None else core.prepared(hit, get(), now)
    assert prep is not None
    return prep


@pytest.mark.parametrize("path", ["ready", "hit"])
def test_a_remembered_request_refused_takes_a_token_issued_after_it_went(path: str) -> None:
    # The time a remembered request went out is its own: a token issued since (by
    # another request's fetch) replaces the refused one without a fetch.
    core, tok = hot_core()
    prep = remembered(core, path, 10.0)
    assert (prep.sent, prep.at) == (tok, 10.0)
    core.cache.put(core.cache.recency[tok], AccessToken("newer", PULL_A, 20.0, 1000.0))
    flow = core.after(prep, Reply(401, (bearer_line(error="invalid_token"),)))
    effects: list[object] = []
    value: object = None
    while True:
        try:
            effect = core.resume(flow, value, 30.0)
        except StopIteration:
            break
        effects.append(effect)
        value = Reply(200) if isinstance(effect, Resend) else None
    assert effects[-1] == Resend("Bearer newer")
    assert not any(isinstance(e, FetchToken) for e in effects)


def _origin_replaced(core: AuthCore) -> None:
    realm = "https://reg.example/other"
    core.origins.apply(core.origin_of(REG), Answered(bearer_challenge(realm=realm)))


def _identity_replaced(core: AuthCore) -> None:
    core.adopt(core.origin_of(REG), "", ConfigEntry(username="bob", password="other"))


def _identity_bounded_out(core: AuthCore) -> None:
    core.adopt(core.origin_of(REG), "other", CREDS)


@pytest.mark.parametrize(
    ("first", "then"),
    [
        (_origin_replaced, _identity_replaced),
        (_origin_replaced, _identity_bounded_out),
        (_origin_replaced, AuthCore.forget_credentials),
        (_identity_replaced, _origin_replaced),
        (_identity_bounded_out, _origin_replaced),
        (AuthCore.forget_credentials, _origin_replaced),
    ],
)
def test_two_changes_never_bring_back_what_one_ended(
    first: Callable[[AuthCore], None], then: Callable[[AuthCore], None]
) -> None:
    # The generation only moves forward, whichever change moves it: one change
    # must not undo another's and let a decision that ended stand again.
    core, _ = hot_core(FlowPolicy(max_origins=1))
    core.hits_until = math.inf
    first(core)
    then(core)
    assert core.hit("GET", get().url, 0.0) is None


@pytest.mark.parametrize("path", ["ready", "hit"])
def test_a_remembered_request_refused_takes_no_token_issued_before_it_went(path: str) -> None:
    # The identity a remembered request went with is its own: with it, a token the
    # cache held from before the request is no better than the one refused.
    core, tok = hot_core()
    core.cache.put(core.cache.recency[tok], AccessToken("older", PULL_A, -10.0, 500.0))
    prep = remembered(core, path, 10.0)
    assert (prep.sent, prep.ident) == (tok, core._identities[(core.origin_of(REG).key, "")])
    flow = core.after(prep, Reply(401, (bearer_line(error="invalid_token"),)))
    assert core.resume(flow, None, 30.0) == PrepareResend()
    assert isinstance(core.resume(flow, None, 30.0), FetchToken)
