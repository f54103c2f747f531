"""The core's rules (aociauth.core.rules), tested with plain values: no server, no loop."""

from __future__ import annotations

import email.utils
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from aociauth import parse_scope, unlimited_scope
from aociauth._responses import is_presigned
from aociauth._urls import parse_retry_after as retry_after
from aociauth.core.rules import (
    OAUTH_CLIENT_ID,
    REFUSALS,
    backoff,
    basic_authorization,
    bounded_want,
    is_retryable,
    primary_repository,
    refresh_grant_form,
    refused_by_its_own_claims,
    registry_host,
    token_get_url,
    worth_asking_again,
)
from aociauth.tokens import AccessToken


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://ghcr.io/v2/", "ghcr.io"),
        ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
        ("https://reg.example:443/v2/", "reg.example:443"),
        ("http://[::1]:5000/v2/", "[::1]:5000"),
        ("https://user:pw@reg.example/v2/", "reg.example"),
        ("/v2/", ""),  # no host at all
    ],
)
def test_registry_host_is_what_the_config_is_asked_about(url: str, key: str) -> None:
    assert registry_host(URL(url)) == key


@pytest.mark.parametrize(
    ("scope", "repo"),
    [
        ("repository:team/app:pull", "team/app"),
        ("repository:team/app:pull,push", "team/app"),
        ("repository:src:pull repository:dst:pull,push", "dst"),  # a mount: the target
        ("repository:a:pull repository:b:pull", ""),  # ambiguous: no namespace applies
        ("registry:catalog:*", ""),
        ("", ""),
    ],
)
def test_primary_repository(scope: str, repo: str) -> None:
    assert primary_repository(parse_scope(scope)) == repo


def test_retry_after_seconds_and_dates_are_capped() -> None:
    assert retry_after("3", cap=10, now=0.0) == 3.0
    assert retry_after("300", cap=10, now=0.0) == 10.0
    assert retry_after(None, cap=10, now=0.0) is None
    assert retry_after("soon", cap=10, now=0.0) is None
    assert retry_after("-1", cap=10, now=0.0) is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 4, usegmt=True)
    assert retry_after(date, cap=10, now=now) == pytest.approx(4.0)
    past = email.utils.formatdate(now - 100, usegmt=True)
    assert retry_after(past, cap=10, now=now) == 0.0
    far = email.utils.formatdate(now + 10_000, usegmt=True)
    assert retry_after(far, cap=10, now=now) == 10.0


@given(
    attempt=st.integers(min_value=0, max_value=200),
    base=st.floats(min_value=0.001, max_value=5),
    cap=st.floats(min_value=0.01, max_value=60),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_is_bounded_and_grows(attempt: int, base: float, cap: float, jitter: float) -> None:
    wait = backoff(attempt, base, cap, jitter)
    assert 0 < wait <= cap
    assert math.isfinite(wait)
    assert backoff(attempt + 1, base, cap, jitter) >= wait


def test_only_a_refusal_is_worth_asking_the_registry_again() -> None:
    assert worth_asking_again(401)
    assert worth_asking_again(403)
    assert worth_asking_again(400)
    assert not worth_asking_again(429)
    assert not worth_asking_again(503)
    assert not worth_asking_again(None)  # unreachable
    assert 401 in REFUSALS
    assert 429 not in REFUSALS


def test_token_get_url_keeps_the_challenge_string_and_the_realm_query() -> None:
    scope = parse_scope("other repository:foo:push,pull")
    url = token_get_url(URL("https://auth.example/token?account=me"), scope, "svc")
    assert url.query.getall("scope") == ["other", "repository:foo:push,pull"]
    assert url.query["service"] == "svc"
    assert url.query["account"] == "me"
    bare = token_get_url(URL("https://auth.example/token"), parse_scope(""), "")
    assert "scope" not in bare.query
    assert "service" not in bare.query


def test_refresh_grant_form() -> None:
    form = refresh_grant_form("RT", parse_scope("repository:a:pull"), "svc")
    assert form == {
        "grant_type": "refresh_token",
        "refresh_token": "RT",
        "client_id": OAUTH_CLIENT_ID,
        "scope": "repository:a:pull",
        "service": "svc",
    }
    assert "service" not in refresh_grant_form("RT", parse_scope(""), "")


def test_basic_authorization_is_utf8() -> None:
    assert basic_authorization("Aladdin", "open sesame") == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    assert basic_authorization("é", "ü") == "Basic w6k6w7w="


def test_refused_by_its_own_claims() -> None:
    wanted = parse_scope("repository:a:pull,push")
    granted_pull = AccessToken("t", parse_scope("repository:a:pull"), 0, 60, introspected=True)
    opaque = AccessToken("t", parse_scope("repository:a:pull"), 0, 60, introspected=False)
    assert refused_by_its_own_claims(granted_pull, wanted, wanted)
    assert not refused_by_its_own_claims(granted_pull, None, wanted)  # from the cache
    assert not refused_by_its_own_claims(opaque, wanted, wanted)  # claims unknown
    # The registry wants something we did not ask for: asking for it may work.
    assert not refused_by_its_own_claims(
        granted_pull, wanted, parse_scope("repository:a:pull,push repository:b:pull")
    )
    full = AccessToken("t", unlimited_scope(), 0, 60, introspected=True)
    assert not refused_by_its_own_claims(full, wanted, wanted)


@pytest.mark.parametrize(
    ("url", "presigned"),
    [
        ("https://s3.example/b/x?X-Amz-Signature=abc&X-Amz-Date=1", True),
        ("https://storage.example/o?GoogleAccessId=a&Signature=b", True),
        ("https://acct.blob.core.example/c/b?sv=1&se=2&sig=c", True),
        ("https://cdn.example/x?Policy=a&Key-Pair-Id=b&Signature=c", True),
        ("https://reg.example/v2/a/blobs/uploads/?mount=d&from=b", False),
        ("https://reg.example/v2/_catalog?n=10", False),
        ("https://reg.example/v2/", False),
    ],
)
def test_is_presigned(url: str, presigned: bool) -> None:
    assert is_presigned(URL(url)) is presigned


@pytest.mark.parametrize(
    ("status", "retry", "ask_again"),
    [
        (None, True, False),  # no answer at all
        (200, False, False),
        (399, False, False),
        (400, False, True),
        (401, False, True),
        (428, False, True),
        (429, True, False),  # a rate limit: wait and retry, never a refusal
        (430, False, True),
        (499, False, True),
        (500, True, False),
        (503, True, False),
        (599, True, False),
    ],
)
def test_retry_and_ask_again_at_their_boundaries(
    status: int | None, retry: bool, ask_again: bool
) -> None:
    assert is_retryable(status) is retry
    assert worth_asking_again(status) is ask_again


def test_a_long_retry_after_is_still_seconds_and_the_cap_holds() -> None:
    assert retry_after("9999999999", cap=1e12, now=0.0) == 9999999999.0
    assert retry_after("99999999999", cap=1e12, now=0.0) == 99999999999.0
    assert retry_after("9" * 60, cap=1e12, now=0.0) == 1e12
    assert retry_after("9" * 65, cap=1e12, now=0.0) is None  # past the longest value read


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "jitter", "wait"),
    [
        (0, 1.0, 100.0, 0.5, 1.0),
        (3, 1.0, 100.0, 0.0, 4.0),
        (3, 1.0, 100.0, 0.75, 10.0),
        (10, 1.0, 100.0, 0.5, 100.0),
        (100, 1.0, math.inf, 0.5, 2.0**64),  # the exponent stops at 64
    ],
)
def test_backoff_values(attempt: int, base: float, cap: float, jitter: float, wait: float) -> None:
    assert backoff(attempt, base, cap, jitter) == wait


def test_bounded_want_keeps_a_scope_at_its_bounds() -> None:
    two = parse_scope("repository:a:pull repository:b:pull")
    size = len(str(two))
    assert bounded_want(two, 2, size) == two
    assert bounded_want(two, 1, size) == parse_scope("")
    assert bounded_want(two, 2, size - 1) == parse_scope("")
    assert bounded_want(unlimited_scope(), 10, 100) == parse_scope("")
    assert bounded_want(parse_scope(""), 0, 0) == parse_scope("")
