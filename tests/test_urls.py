"""Hostile realms, Locations and Retry-After values end in our answer, never in a crash.

yarl raises IndexError, UnicodeError and TypeError as well as ValueError for
text it cannot read; parse_url/join_url turn all of them into None, and the
realm path (challenge → absolute_realm → check_realm → token URL) lets only
OCIAuthError out.
"""

from __future__ import annotations

import datetime
import email.utils

import aiohttp
import pytest
import yarl
from hypothesis import example, given
from hypothesis import strategies as st

from aociauth._redact import redact_query, redact_query_values, redact_url
from aociauth._responses import redirect_target
from aociauth._urls import (
    MAX_RETRY_AFTER_LENGTH,
    MAX_URL_LENGTH,
    crosses_origin,
    join_url,
    parse_retry_after,
    parse_url,
)
from aociauth.challenge import parse_challenges, select_challenge
from aociauth.core.rules import token_get_url
from aociauth.errors import OCIAuthError
from aociauth.realm import RealmDecision, RealmPolicy, absolute_realm, check_realm
from aociauth.scope import parse_scope

REGISTRY = yarl.URL("https://registry.example/v2/")

# Each of these makes yarl raise something: the exception named is what it raised
# (yarl 1.25) before parse_url, and why catching ValueError alone was not enough.
HOSTILE = {
    "http://[": "ValueError",
    "http://[::1": "ValueError",
    "//[": "ValueError",
    "http://[]@": "IndexError",
    "http://[]@x/": "IndexError",
    "http://h:99999999999999999999/": "ValueError",
    "http://h:65536/": "ValueError",
    "http://xn--zz/": "UnicodeError on .host",
    "http://a\udcff/": "UnicodeError",
    "http://xn--ls8h.xn--/": "UnicodeError on .host",
    "http://" + "\u00e4" * 64 + ".example/": "UnicodeError (label too long)",
}


def _raises_in_yarl(text: str) -> bool:
    try:
        url = yarl.URL(text)
        _ = (url.host, url.port)
    except Exception:
        return True
    return False


@pytest.mark.parametrize("text", sorted(HOSTILE))
def test_what_yarl_raises_for_becomes_none(text: str) -> None:
    assert _raises_in_yarl(text), f"yarl now reads {text!r}; the list is stale"
    assert parse_url(text) is None
    assert join_url(REGISTRY, text) is None
    assert absolute_realm(REGISTRY, text) == text
    assert check_realm(REGISTRY, text).decision is RealmDecision.REFUSE


def test_index_error_is_what_the_old_catch_let_through() -> None:
    with pytest.raises(IndexError):
        yarl.URL("http://[]@")


def test_good_urls_parse_and_join() -> None:
    assert parse_url("https://auth.example/token?a=b") == yarl.URL("https://auth.example/token?a=b")
    assert join_url(REGISTRY, "/token") == yarl.URL("https://registry.example/token")
    assert join_url(REGISTRY, "token") == yarl.URL("https://registry.example/v2/token")
    assert join_url(REGISTRY, "https://other.example/x") == yarl.URL("https://other.example/x")
    assert absolute_realm(REGISTRY, "/token") == "https://registry.example/token"
    assert absolute_realm(REGISTRY, "https://a.example/t") == "https://a.example/t"


def test_overlong_text_is_not_parsed() -> None:
    long = "https://a.example/" + "x" * MAX_URL_LENGTH
    assert parse_url(long) is None
    assert join_url(REGISTRY, long) is None


# -- properties -------------------------------------------------------------

# Text built from the characters that break URL parsers, in URL-ish shapes.
_HOSTILE_CHARS = st.sampled_from(
    [
        *"[]@:%/?#.\\ \t-_x0123456789aZ",
        *("xn--", "\udcff", "\u0661", "\u2488", "\uff0e", "%25", "%00", "\u00df", "::", "]:"),
    ]
)
_hostile_text = st.lists(_HOSTILE_CHARS, max_size=30).map("".join)
_schemes = st.sampled_from(["http", "https", "HTTP", "ftp", "", "h", "x-y+z", "ht tp"])
url_ish = st.one_of(
    st.text(max_size=60),
    st.builds(lambda s, a, r: f"{s}://{a}{r}", _schemes, _hostile_text, _hostile_text),
    st.builds(lambda a, r: f"//{a}{r}", _hostile_text, _hostile_text),
    _hostile_text,
)


@given(url_ish)
@example("http://[]@")
@example("http://xn--zz/")
def test_parse_and_join_never_raise(text: str) -> None:
    parsed = parse_url(text)
    if parsed is not None:
        str(parsed)
        _ = (
            parsed.host,
            parsed.port,
            parsed.origin() if parsed.is_absolute() and parsed.scheme else None,
        )
    joined = join_url(REGISTRY, text)
    assert joined is None or isinstance(joined, yarl.URL)


@given(url_ish)
def test_location_values_never_break_the_message_helpers(location: str) -> None:
    for helper in (redact_url, redact_query, redact_query_values):
        assert isinstance(helper(location), str)


_param_values = st.one_of(url_ish, st.text(max_size=40))


@given(
    realm=_param_values,
    service=_param_values,
    scope=_param_values,
    error=_param_values,
    policy=st.builds(RealmPolicy, strict=st.booleans(), allow_private_realms=st.booleans()),
)
@example(realm="http://[]@", service="s", scope="repository:a:pull", error="", policy=RealmPolicy())
def test_challenge_parameters_end_in_a_verdict_or_our_error(
    realm: str, service: str, scope: str, error: str, policy: RealmPolicy
) -> None:
    """The path the middleware takes from a 401 to a token URL, fed anything."""
    escaped = [v.replace("\\", "\\\\").replace('"', '\\"') for v in (realm, service, scope, error)]
    header = 'Bearer realm="{}",service="{}",scope="{}",error="{}"'.format(*escaped)
    try:
        challenge = select_challenge(parse_challenges([header]))
        if challenge is None:
            return
        text = absolute_realm(REGISTRY, challenge.realm or "")
        verdict = check_realm(REGISTRY, text, policy)
        if verdict.decision is RealmDecision.REFUSE:
            return
        url = token_get_url(verdict.url, parse_scope(challenge.scope or ""), challenge.service)
        assert isinstance(str(url), str)
    except OCIAuthError:
        pass


# -- Retry-After --------------------------------------------------------------

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "value", ["²", "٣", "\uff11\uff12", "1\u0660", "+5", "-5", "1e3", "5.5", "0x10", "", " ", "x"]
)
def test_retry_after_takes_only_ascii_digits_or_a_date(value: str) -> None:
    assert parse_retry_after(value, 60, NOW) is None


def test_retry_after_delay_seconds_are_capped() -> None:
    assert parse_retry_after("0", 60, NOW) == 0.0
    assert parse_retry_after(" 7\t", 60, NOW) == 7.0
    assert parse_retry_after("120", 60, NOW) == 60.0
    assert parse_retry_after("9" * MAX_RETRY_AFTER_LENGTH, 60, NOW) == 60.0
    assert parse_retry_after("9" * (MAX_RETRY_AFTER_LENGTH + 1), 60, NOW) is None


def test_retry_after_dates_are_measured_from_now_and_capped() -> None:
    in_30s = email.utils.formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after(in_30s, 60, NOW) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(NOW + 3600, usegmt=True), 60, NOW) == 60.0
    assert parse_retry_after(email.utils.formatdate(NOW - 3600, usegmt=True), 60, NOW) == 0.0
    # "-0000" means no zone is known: read as UTC, not as this machine's local time.
    naive = email.utils.formatdate(NOW + 30).rsplit(" ", 1)[0] + " -0000"
    assert parse_retry_after(naive, 60, NOW) == pytest.approx(30.0)


@pytest.mark.parametrize(
    "value",
    ["Mon, 01 Jan 99999 00:00:00 GMT", "Mon, 32 Jan 2030 00:00:00 GMT", "Mon, 01 Foo 2030", ","],
)
def test_retry_after_bad_dates_are_no_hint(value: str) -> None:
    assert parse_retry_after(value, 60, NOW) is None


def test_retry_after_odd_caps_never_raise() -> None:
    assert parse_retry_after("5", -1.0, NOW) == 0.0
    assert parse_retry_after("5", float("nan"), NOW) == 0.0
    assert parse_retry_after("5", float("inf"), NOW) == 5.0
    assert parse_retry_after("9" * 30, float("inf"), NOW) == 1e30


@given(
    value=st.one_of(
        st.text(max_size=80),
        st.integers(min_value=0).map(str),
        st.datetimes(
            min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31)
        ).map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S GMT")),
    ),
    cap=st.floats(min_value=0, max_value=1e6),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_retry_after_is_none_or_within_zero_and_cap(value: str, cap: float, now: float) -> None:
    wait = parse_retry_after(value, cap, now)
    assert wait is None or 0.0 <= wait <= cap
    if wait is not None and not any(c in value for c in ",:"):
        assert value.strip(" \t").isascii()


# -- redirects ------------------------------------------------------------------

BLOB = yarl.URL("https://registry.example/v2/a/blobs/sha256:00")


@pytest.mark.parametrize("location", sorted(HOSTILE))
def test_an_unreadable_location_is_a_client_error_that_does_not_show_it(location: str) -> None:
    with pytest.raises(aiohttp.InvalidUrlRedirectClientError) as ei:
        redirect_target(BLOB, 307, location)
    assert location not in str(ei.value)
    assert "registry.example" in str(ei.value)


def test_redirect_target_reads_only_redirects() -> None:
    assert redirect_target(BLOB, 200, "http://[]@") is None
    assert redirect_target(BLOB, 302, None) is None
    assert redirect_target(BLOB, 307, "/cdn/x?sig=1") == yarl.URL(
        "https://registry.example/cdn/x?sig=1"
    )


@given(url_ish)
def test_redirect_target_raises_only_a_client_error(location: str) -> None:
    try:
        target = redirect_target(BLOB, 302, location)
    except aiohttp.ClientError:
        return
    assert isinstance(target, yarl.URL)


@pytest.mark.parametrize(
    ("target", "crosses"),
    [
        ("https://registry.example/other", False),
        ("https://REGISTRY.example:443/other", False),
        ("http://registry.example/other", True),
        ("https://registry.example:8443/other", True),
        ("https://s3.example/bucket", True),
        ("/relative", True),
        ("//registry.example/x", True),
    ],
)
def test_crosses_origin(target: str, crosses: bool) -> None:
    assert crosses_origin(BLOB, yarl.URL(target)) is crosses
