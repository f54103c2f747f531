"""No secret in any message, whatever text it came in.

redact_text scrubs text aociauth did not write (a custom Config's exception,
a server's error). The property tests embed a random canary secret in
URL-ish text of many shapes and check that no piece of it survives.
"""

from __future__ import annotations

import asyncio
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import aociauth
from aociauth import ConfigEntry
from aociauth._redact import redact_query_values, redact_text
from aociauth.scope import parse_scope
from aociauth.shared_cache import SharedIdentity, SharedToken
from aociauth.testing.gotest import HTTPError, start
from aociauth.testing.pytest_plugin import ClientFactory
from aociauth.tokens import AccessToken, TokenResponse

# A canary is long enough not to occur by chance and made of the characters the
# shape allows in that position (RFC 3986 userinfo and query characters, or any
# visible character where a header value runs to the end of its line).
_UNRESERVED = string.ascii_letters + string.digits + "-._~"
_SUB_DELIMS = "!$&'()*+,;="
USERINFO_CHARS = _UNRESERVED + _SUB_DELIMS + "%:@/?#[]"
QUERY_CHARS = _UNRESERVED + "!$()*+,;=%:@/?"
HEADER_CHARS = _UNRESERVED + _SUB_DELIMS.replace("'", "") + "%:@/?#[]{}|^\\<>` "
TOKEN_CHARS = _UNRESERVED + "+/=!$%*:@,;()[]{}|^\\"


def canaries(alphabet: str) -> st.SearchStrategy[str]:
    # "Zq" marks the start, so that a canary never begins like "realm=".
    return st.text(alphabet=alphabet, min_size=8, max_size=40).map(lambda s: f"Zq{s}")


schemes = st.one_of(
    st.sampled_from(["https", "http", "vault+https", "redis", "s3", "git+ssh", "HTTPS", "x"]),
    st.from_regex(r"[a-z][a-z0-9+.\-]{0,10}", fullmatch=True),
)
hosts = st.sampled_from(
    [
        "vault.example",
        "vault.example:8200",
        "[::1]",
        "[::1",
        "10.0.0.1:5000",
        "xn--zz",
        "\u00e9t\u00e9.example",
        "h",
        "[",
    ]
)
users = st.sampled_from(["robot", "robot$ci", "", "u%40x", "oauth2accesstoken", "AWS"])
paths = st.sampled_from(["", "/", "/v1/secret/data/x", "/a@b", "?x=1", "#frag", "/p?q=1#f"])
around = st.sampled_from(
    [
        ("", ""),
        ("cannot reach ", ": timeout"),
        ("(", ")"),
        ("'", "'"),
        ('"', '"'),
        ("URL('", "')"),
        ("[", "]"),
        ("url=", ", retrying"),
        ("error: ", "\nnext line"),
        ("<", ">"),
    ]
)
secret_keys = st.sampled_from(
    [
        "X-Amz-Signature",
        "x-amz-signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "X-Goog-Signature",
        "X-Goog-Credential",
        "sig",
        "Signature",
        "access_token",
        "refresh_token",
        "token",
        "password",
        "client_secret",
        "api_key",
        "apikey",
        "OSSAccessKeyId",
        "auth",
        "hdnts",
    ]
)


_MARKERS = "<redacted>@<redacted-jwt>REDACTED"


def assert_no_piece_of(canary: str, out: str, template: str) -> None:
    """Neither the canary nor any 6-character run of it (beyond the marker) is left,
    unless the text around it already held that run."""
    assert canary not in out
    for i in range(2, len(canary) - 5):
        piece = canary[i : i + 6]
        if piece.strip() and piece not in template and piece not in _MARKERS:
            assert piece not in out, (piece, out)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    canary=canaries(USERINFO_CHARS),
    scheme=schemes,
    user=users,
    host=hosts,
    path=paths,
    wrap=around,
    form=st.integers(0, 3),
)
@example(
    canary="ZqPASSWORD1",
    scheme="https",
    user="robot",
    host="vault.example",
    path="/v1",
    wrap=("", ""),
    form=0,
)
def test_userinfo_of_any_url_is_hidden(
    canary: str, scheme: str, user: str, host: str, path: str, wrap: tuple[str, str], form: int
) -> None:
    userinfo = [f"{user}:{canary}", canary, f":{canary}", f"{canary}:x"][form]
    text = f"{wrap[0]}{scheme}://{userinfo}@{host}{path}{wrap[1]}"
    out = redact_text(text)
    assert_no_piece_of(canary, out, text.replace(canary, ""))
    assert "<redacted>" in out


@settings(max_examples=200)
@given(
    canary=canaries(USERINFO_CHARS.replace("/", "").replace("#", "").replace("?", "")),
    user=users.filter(bool),
    host=hosts,
    wrap=around,
)
def test_user_colon_password_at_host_without_a_scheme_is_hidden(
    canary: str, user: str, host: str, wrap: tuple[str, str]
) -> None:
    text = f"{wrap[0]}{user}:{canary}@{host}{wrap[1]}"
    out = redact_text(text)
    assert_no_piece_of(canary, out, text.replace(canary, ""))


@settings(max_examples=150)
@given(
    canary=canaries(QUERY_CHARS),
    key=secret_keys,
    host=hosts,
    before=st.sampled_from(["", "a=1&", "X-Amz-Algorithm=AWS4-HMAC-SHA256&", "scope=x&"]),
    after=st.sampled_from(["", "&b=2", "#frag", "&X-Amz-Date=20260101T000000Z"]),
    wrap=around,
    scheme=st.sampled_from(["https", "http", "gs", ""]),
)
def test_signature_like_query_values_are_hidden(
    canary: str,
    key: str,
    host: str,
    before: str,
    after: str,
    wrap: tuple[str, str],
    scheme: str,
) -> None:
    prefix = f"{scheme}://" if scheme else ""
    text = f"{wrap[0]}{prefix}{host}/b/k?{before}{key}={canary}{after}{wrap[1]}"
    out = redact_text(text)
    assert_no_piece_of(canary, out, text.replace(canary, ""))


@settings(max_examples=150)
@given(
    canary=canaries(TOKEN_CHARS),
    form=st.sampled_from(
        [
            "Authorization: Basic {c}",
            "authorization: Bearer {c}",
            "Proxy-Authorization: Basic {c}\nHost: x",
            "{{'Authorization': 'Bearer {c}', 'Host': 'reg.example'}}",
            '{{"Authorization": "Basic {c}"}}',
            "Cookie: session={c}; other=1",
            "Set-Cookie: session={c}; Path=/",
            "X-Registry-Auth: {c}",
            "sent Bearer {c} to the registry",
            "Basic {c}",
            '{{"password": "{c}"}}',
            "{{'token': '{c}'}}",
            "refresh_token={c}",
            "access_token: {c}",
        ]
    ),
)
def test_header_and_key_value_credentials_are_hidden(canary: str, form: str) -> None:
    if "'" in form and "'" in canary:
        canary = canary.replace("'", "")
    text = form.format(c=canary)
    out = redact_text(text)
    assert_no_piece_of(canary, out, text.replace(canary, ""))


@settings(max_examples=100)
@given(canary=canaries(HEADER_CHARS))
def test_header_values_are_hidden_to_the_end_of_the_line(canary: str) -> None:
    text = f"request headers:\nAuthorization: Basic {canary}\nAccept: */*"
    out = redact_text(text)
    assert_no_piece_of(canary, out, text.replace(canary, ""))
    assert "Accept: */*" in out


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("mail alice@example.com about it", "alice@example.com"),
        ("pull localhost:5000/app@sha256:abcdef failed", "localhost:5000/app@sha256:abcdef"),
        ('challenge Bearer realm="https://auth.example/token"', 'realm="https://auth.example/'),
        ("registry answered status_code=401", "status_code=401"),
        ("https://reg.example/v2/a/manifests/x?scope=repository:a:pull", "scope=repository:a:pull"),
    ],
)
def test_what_is_not_a_credential_is_left_alone(text: str, kept: str) -> None:
    assert kept in redact_text(text)


def test_redact_text_is_idempotent_on_examples() -> None:
    for text in [
        "https://robot:pw@vault.example/x?sig=abc",
        "{'Authorization': 'Basic QUJD'}",
        "robot:pw@vault",
    ]:
        once = redact_text(text)
        assert redact_text(once) == once


def test_redact_query_values_hides_every_value_and_keeps_every_key() -> None:
    url = "https://u:p@cdn.example/blob?hdnts=exp%3D1~hmac%3Dab&scope=x&a=&b=1#frag"
    shown = redact_query_values(url)
    assert shown == "https://cdn.example/blob?hdnts=REDACTED&scope=REDACTED&a=REDACTED&b=REDACTED"
    assert redact_query_values("https://cdn.example/blob") == "https://cdn.example/blob"
    assert redact_query_values("http://[]@") == "<unparseable URL>"


class RaisingConfig:
    """A user's Config whose backend fails with its own URL, password included."""

    async def entry_for_registry(self, host: str) -> ConfigEntry:
        raise RuntimeError(
            "vault lookup failed: GET https://robot:Zq-VAULT-PASSWORD@vault.example:8200"
            "/v1/secret/data/registry?X-Vault-Token=Zq-VAULT-TOKEN: 403"
        )


async def test_a_custom_configs_exception_reaches_the_caller_without_its_secrets(
    stack: list[object],
    oci_client: ClientFactory,
) -> None:
    async def gate(req: object) -> None:
        raise HTTPError(401, {"Www-Authenticate": 'Basic realm="reg"'})

    s = await start(gate)
    stack.append(s)
    session = await oci_client(RaisingConfig())
    with pytest.raises(aociauth.CredentialLookupError) as ei:
        await asyncio.wait_for(session.get(s.url("/v2/a/manifests/x")), 10)
    message = f"{ei.value} {ei.value!r}"
    assert "vault.example" in message  # still says where it failed
    assert "Zq-VAULT-PASSWORD" not in message
    assert "Zq-VAULT-TOKEN" not in message


# -- reprs: every secret-bearing value says "<set>"/"<redacted>" the same way --


def test_every_secret_bearing_value_hides_its_secret_the_same_way() -> None:
    scope = parse_scope("repository:a:pull")
    shown = {
        repr(AccessToken("SECRET-1", scope, 0.0, 60.0)): (
            "AccessToken(<redacted>, scope='repository:a:pull', expires_at=60.0)"
        ),
        repr(SharedToken("SECRET-2", scope, 1e9)): (
            "SharedToken(<redacted>, scope='repository:a:pull', expires_at=1000000000.0)"
        ),
        repr(TokenResponse("SECRET-3", "", 60.0)): (
            "TokenResponse(token=<set>, refresh_token=<empty>, expires_in=60.0)"
        ),
        repr(SharedIdentity("r.example", "alice", "SECRET-4")): (
            "SharedIdentity(registry='r.example', username='alice', secret=<set>)"
        ),
        repr(ConfigEntry(username="alice", password="SECRET-5", access_token="SECRET-6")): (
            "ConfigEntry(username='alice', password=<set>, access_token=<set>)"
        ),
    }
    for got, wanted in shown.items():
        assert got == wanted
