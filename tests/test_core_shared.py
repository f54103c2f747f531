"""What the core gives a shared token-cache tier: plain values, no server, no event loop.

The shared tier itself is I/O in the driver (aociauth._driver.SharedTier); the
core only says which token a fetch replaces (``FetchJob.replacing``), whether
a fetch would send credentials (``fetch_uses_credentials``), and takes a token
obtained elsewhere into its cache (``adopt_token``). Driven with the helpers of
test_core_flow.
"""

from __future__ import annotations

import math

from test_core_flow import (
    CREDS,
    FOREIGN_REALM,
    NO_CREDS,
    PULL_A,
    PULL_B,
    PUSH_A,
    REALM,
    bearer_challenge,
    bearer_core,
    bearer_line,
    cache,
    drive,
    get,
    identity,
    jwt,
    ok,
    open_core,
)
from yarl import URL

from aociauth.config import ConfigEntry
from aociauth.core import (
    Deny,
    Fail,
    FetchJob,
    FetchToken,
    FlowPolicy,
    Pass,
    PrepareResend,
    RefreshInBackground,
    Reply,
    Resend,
    Send,
)
from aociauth.errors import TokenServerError
from aociauth.realm import RealmPolicy
from aociauth.scope import parse_scope
from aociauth.tokens import AccessToken

# -- FetchJob.replacing ---------------------------------------------------------


def test_a_fetch_ahead_replaces_nothing() -> None:
    core = bearer_core()
    run = drive(core, get(), tokens=[ok("T1")])
    (fetch,) = run.of(FetchToken)
    assert fetch.job.replacing is None


def test_a_fetch_after_a_401_replaces_the_refused_token() -> None:
    core = bearer_core()
    refused = cache(core, PULL_A, value="refused")
    run = drive(
        core, get(), replies=[Reply(401, (bearer_line(),)), Reply(200)], tokens=[ok("T2")], now=5.0
    )
    (fetch,) = run.of(FetchToken)
    assert fetch.job.replacing is refused
    assert run.effects[-1] == Resend("Bearer T2")
    assert isinstance(run.outcome, Pass)


def test_a_fetch_after_a_401_to_a_request_sent_without_a_token_replaces_nothing() -> None:
    core = open_core()
    run = drive(core, get(), replies=[Reply(401, (bearer_line(),)), Reply(200)], tokens=[ok()])
    (fetch,) = run.of(FetchToken)
    assert fetch.job.replacing is None


def test_a_refresh_ahead_replaces_the_token_being_refreshed() -> None:
    core = bearer_core()
    tok = cache(core, PULL_A, issued=0.0, life=100.0)
    (refresh,) = drive(core, get(), now=90.0).of(RefreshInBackground)
    assert refresh.job.replacing is tok


# -- fetch_uses_credentials -----------------------------------------------------


def uses(entry: ConfigEntry, realm: str = REALM, policy: FlowPolicy | None = None) -> bool | None:
    """What ``fetch_uses_credentials`` says of a fetch for ``entry`` at ``realm``."""
    core = bearer_core(policy, bearer_challenge(realm=realm))
    ident = identity(core, entry)
    job = FetchJob(core.origin_of(get().url), ident, bearer_challenge(realm=realm), PULL_A, PULL_A)
    before = core.stats.as_dict()
    answer = core.fetch_uses_credentials(job)
    assert core.stats.as_dict() == before  # it decides and counts nothing
    return answer


def test_credentials_go_to_a_trusted_realm() -> None:
    assert uses(CREDS) is True
    assert uses(ConfigEntry(refresh_token="rt")) is True


def test_no_credentials_means_an_anonymous_fetch() -> None:
    assert uses(NO_CREDS) is False
    assert uses(ConfigEntry(username="alice")) is False  # a user name alone sends nothing


def test_a_realm_not_trusted_with_credentials_is_asked_anonymously() -> None:
    assert uses(CREDS, FOREIGN_REALM) is False


def test_a_refused_realm_makes_no_fetch() -> None:
    strict = FlowPolicy(realm_policy=RealmPolicy(strict=True))
    assert uses(CREDS, FOREIGN_REALM, strict) is None
    assert uses(CREDS, "") is None  # no realm at all


def test_a_fetch_whose_origin_was_evicted_meanwhile_is_still_answered() -> None:
    core = bearer_core(FlowPolicy(max_origins=1))
    st = core.origin_of(get().url)
    job = FetchJob(st, identity(core, CREDS), bearer_challenge(), PULL_A, PULL_A)
    core.origin_of(URL("https://other.example"))  # evicts the registry's origin
    assert core.origins.get(st.url) is None
    assert core.fetch_uses_credentials(job) is True


# -- adopt_token ----------------------------------------------------------------


def test_an_adopted_token_is_a_local_hit_for_the_next_request() -> None:
    core = bearer_core()
    ident = identity(core)
    core.now = 10.0
    got = core.adopt_token(ident, AccessToken("shared", PULL_A, 0.0, 300.0))
    assert got is not None
    assert got.scope == PULL_A
    # The hot path answers: no effect but the send.
    prep = core.ready(get())
    assert prep is not None
    assert prep.authorization == "Bearer shared"
    run = drive(core, get(), now=11.0)
    assert run.sent == Send("Bearer shared")
    assert run.of(FetchToken) == []


def test_an_adopted_token_goes_to_its_identity_only() -> None:
    core = bearer_core()
    alice = identity(core)
    bob = identity(core, ConfigEntry(username="bob", password="pw"), namespace="x")
    core.adopt_token(alice, AccessToken("alices", PULL_A, 0.0, 300.0))
    assert core.cache.get(alice.partition, PULL_A, 1.0) is not None
    assert core.cache.get(bob.partition, PULL_A, 1.0) is None


def test_an_adopted_token_is_believed_no_further_than_its_access_claim() -> None:
    core = bearer_core()
    ident = identity(core)
    value = jwt(("repository", "a", ["pull"]))
    # The shared entry claims push and b too; the token itself says pull on a.
    claimed = parse_scope("repository:a:pull,push repository:b:pull")
    got = core.adopt_token(ident, AccessToken(value, claimed, 0.0, 300.0))
    assert got is not None
    assert got.scope == PULL_A
    assert got.introspected
    assert core.cache.get(ident.partition, PUSH_A, 1.0) is None
    assert core.cache.get(ident.partition, PULL_B, 1.0) is None
    assert core.cache.get(ident.partition, PULL_A, 1.0) is got


def test_an_adopted_token_whose_claim_grants_none_of_it_is_not_cached() -> None:
    core = bearer_core()
    ident = identity(core)
    value = jwt(("repository", "other", ["pull"]))
    assert core.adopt_token(ident, AccessToken(value, PULL_A, 0.0, 300.0)) is None
    assert len(core.cache) == 0


def test_an_expired_token_is_not_adopted() -> None:
    core = bearer_core()
    ident = identity(core)
    core.now = 400.0
    assert core.adopt_token(ident, AccessToken("old", PULL_A, 0.0, 300.0)) is None
    assert core.adopt_token(ident, AccessToken("last", PULL_A, 0.0, 400.5)) is None
    assert len(core.cache) == 0
    assert core.adopt_token(ident, AccessToken("ok", PULL_A, 0.0, math.inf)) is not None


# -- a refused token from elsewhere is not final ---------------------------------


def test_an_adopted_token_refused_after_a_401_is_replaced_once() -> None:
    core = open_core()
    fetched: list[FetchToken] = []

    def fetch(effect: FetchToken) -> AccessToken | None:
        fetched.append(effect)
        if len(fetched) == 1:  # the shared tier had another process's token
            return core.adopt_token(effect.job.identity, AccessToken("shared", PULL_A, 0.0, 300.0))
        return AccessToken("ours", PULL_A, 1.0, 301.0)

    line = bearer_line()
    run = drive(
        core,
        get(),
        replies=[Reply(401, (line,)), Reply(401, (line,)), Reply(200)],
        fetch=fetch,
        now=1.0,
    )
    assert isinstance(run.outcome, Pass)
    assert run.of(Resend) == [Resend("Bearer shared"), Resend("Bearer ours")]
    assert len(run.of(PrepareResend)) == 2
    first, second = fetched
    assert first.job.replacing is None
    assert second.job.replacing is not None
    assert second.job.replacing.value == "shared"
    # The refused token is gone from the cache.
    assert core.cache.get(identity(core, CREDS).partition, PULL_A, 2.0) is None
    assert core.stats.responses_401 == 2
    assert core.stats.retries_after_401 == 2
    assert core.stats.rewritten_403 == 0


def test_after_an_adopted_token_is_refused_only_a_token_newer_than_the_refusal_is_taken() -> None:
    core = open_core()
    part = identity(core, CREDS).partition
    fetched: list[FetchToken] = []

    def fetch(effect: FetchToken) -> AccessToken | None:
        fetched.append(effect)
        if len(fetched) == 1:
            # Another request cached a token of its own meanwhile, before the refusal.
            core.cache.put(part, AccessToken("older", PULL_A, 0.5, 300.0))
            return core.adopt_token(effect.job.identity, AccessToken("shared", PULL_A, 0.0, 300.0))
        return AccessToken("ours", PULL_A, 1.0, 301.0)

    line = bearer_line()
    replies = [Reply(401, (line,)), Reply(401, (line,)), Reply(200)]
    run = drive(core, get(), replies=replies, fetch=fetch, now=1.0)
    assert run.of(Resend) == [Resend("Bearer shared"), Resend("Bearer ours")]
    assert len(fetched) == 2


def test_an_adopted_token_refused_whose_replacement_fails_fails_the_request() -> None:
    core = open_core()
    error = TokenServerError("down", registry="reg.example", step="token", status=503)

    def fetch(effect: FetchToken) -> AccessToken | TokenServerError | None:
        if effect.job.replacing is None:
            return core.adopt_token(effect.job.identity, AccessToken("shared", PULL_A, 0.0, 300.0))
        return error

    line = bearer_line()
    run = drive(core, get(), replies=[Reply(401, (line,))] * 2, fetch=fetch, now=1.0)
    assert run.outcome == Fail(error)
    assert run.of(Resend) == [Resend("Bearer shared")]


def test_a_second_refusal_after_an_adopted_token_is_final() -> None:
    core = open_core()

    def fetch(effect: FetchToken) -> AccessToken | None:
        value = "shared" if effect.job.replacing is None else "ours"
        return core.adopt_token(effect.job.identity, AccessToken(value, PULL_A, 0.0, 300.0))

    line = bearer_line()
    run = drive(core, get(), replies=[Reply(401, (line,))] * 3, fetch=fetch, now=1.0)
    assert isinstance(run.outcome, Deny)
    assert len(run.of(FetchToken)) == 2
    assert core.stats.rewritten_403 == 1


def test_a_token_of_our_own_refused_after_a_401_is_final_at_once() -> None:
    core = open_core()
    line = bearer_line()
    run = drive(core, get(), replies=[Reply(401, (line,))] * 2, tokens=[ok("T1")])
    assert isinstance(run.outcome, Deny)
    assert len(run.of(FetchToken)) == 1
