"""Property-based fuzzing of the parsers that read hostile input: only our errors escape.

* :func:`aociauth.tokens.parse_token_response` reads whatever a token server
  sends: it returns a valid token or raises :class:`TokenResponseError`, whose
  message never quotes the body.
* :func:`aociauth.tokens.granted_scope` reads a token's own claims to learn
  what it grants: any token gives a scope or "unknown", never an exception,
  and never more than the claims list.
* :meth:`ConfigFile.from_dict` takes an already parsed document, which may hold
  Python values no JSON parser makes (bytes, tuples, non-string keys, NaN, lone
  surrogates): it builds a config or raises :class:`ConfigError`, and lookups
  raise nothing but :class:`OCIAuthError`. (tests/test_config.py fuzzes what
  ``load`` parses from JSON; the challenge parser has its own in
  tests/test_challenge.py.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aociauth
from aociauth import ConfigEntry, ConfigError, ConfigFile, OCIAuthError, TokenResponseError
from aociauth.tokens import MAX_EXPIRES_IN, MAX_TOKEN_LENGTH, granted_scope, parse_token_response

MARK = "ZQ9SECRET"
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

secret_st = st.text(alphabet="abcdefghijklmnop0123456789", min_size=4, max_size=10).map(
    lambda s: MARK + s
)
token_like = st.one_of(
    secret_st,
    st.from_regex(r"[A-Za-z0-9\-._~+/]{1,40}={0,2}", fullmatch=True),
    st.text(max_size=20),  # anything, CR, LF and spaces included
    st.just("a" * (MAX_TOKEN_LENGTH + 1)),
    st.just(""),
)
number = st.one_of(
    st.integers(),
    st.integers(min_value=10**300, max_value=10**320),
    st.floats(),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "1e-999"]).map(json.loads),
)
leaf = st.none() | st.booleans() | number | st.text(max_size=10) | token_like
json_value = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def token_documents(draw: st.DrawFn) -> dict[str, object]:
    doc: dict[str, object] = {}
    for name in ("token", "access_token", "refresh_token", "expires_in", "issued_at", "scope"):
        if draw(st.booleans()):
            doc[name] = draw(token_like if "token" in name else json_value)
    doc.update(draw(st.dictionaries(st.text(max_size=8), json_value, max_size=2)))
    return doc


def encode(doc: object, how: str) -> bytes:
    text = json.dumps(doc)
    if how == "utf-8-sig":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "utf-16":
        return text.encode("utf-16")
    if how == "truncated":
        return text.encode()[: len(text) // 2]
    if how == "nested":
        return b"[" * 50_000 + text.encode()
    return text.encode("utf-8", "surrogatepass")


bodies = st.one_of(
    st.binary(max_size=200),
    st.tuples(
        token_documents() | json_value,
        st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "truncated", "nested"]),
    ).map(lambda t: encode(*t)),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_any_token_answer_gives_a_valid_token_or_a_token_response_error(body: bytes) -> None:
    try:
        resp = parse_token_response(body, registry="reg.example")
    except TokenResponseError as exc:
        error: TokenResponseError | None = exc
    else:
        error = None
    if error is not None:
        message = str(error) + repr(error)
        assert "reg.example" in message
        assert MARK not in message, "the error quotes the body"
        assert error.status == 200
        return
    assert isinstance(resp.token, str)
    assert 0 < len(resp.token) <= MAX_TOKEN_LENGTH
    assert B64TOKEN.fullmatch(resp.token)
    assert isinstance(resp.refresh_token, str)
    assert not any(c in resp.refresh_token for c in " \r\n\t")
    assert isinstance(resp.expires_in, float)
    assert math.isfinite(resp.expires_in)
    assert 0 < resp.expires_in <= MAX_EXPIRES_IN
    assert MARK not in repr(resp)


@settings(max_examples=300, deadline=None)
@given(doc=token_documents())
def test_token_is_preferred_when_both_are_usable(doc: dict[str, object]) -> None:
    try:
        resp = parse_token_response(json.dumps(doc).encode(), registry="r")
    except TokenResponseError:
        return
    token = doc.get("token")
    if isinstance(token, str) and B64TOKEN.fullmatch(token) and len(token) <= MAX_TOKEN_LENGTH:
        assert resp.token == token
    else:
        assert resp.token == doc.get("access_token")


# -- config documents as Python values ------------------------------------------------------

odd_leaf = st.one_of(
    leaf,
    st.binary(max_size=6),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2),
    st.just(float("nan")),
)
likely_keys = st.sampled_from(
    ["r.test", "r.test/team", "https://r.test/v1/", "http://r.test", "docker.io"]
)
odd_key = st.one_of(
    likely_keys,
    likely_keys,
    likely_keys,
    st.text(max_size=6),
    st.integers(),
    st.none(),
    st.binary(max_size=4),
)
odd_value = st.recursive(
    odd_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(odd_key, inner, max_size=3),
    ),
    max_leaves=8,
)


@st.composite
def odd_entries(draw: st.DrawFn) -> tuple[object, list[str]]:
    secret = draw(secret_st)
    entry = draw(
        st.dictionaries(
            st.sampled_from(["username", "password", "auth", "identitytoken", "registrytoken"])
            | st.text(max_size=4),
            odd_leaf | st.just(secret),
            max_size=4,
        )
    )
    return (entry if draw(st.integers(0, 5)) else draw(odd_value)), [secret]


@st.composite
def odd_documents(draw: st.DrawFn) -> tuple[object, list[str]]:
    secrets: list[str] = []
    doc: dict[object, object] = {}
    if draw(st.booleans()):
        auths: dict[object, object] = {}
        keys = likely_keys | st.text(max_size=6)
        drawn = draw(st.lists(keys if draw(st.integers(0, 9)) else odd_key, max_size=4))
        for key in ["r.test", *drawn] if draw(st.booleans()) else drawn:
            value, found = draw(odd_entries())
            auths[key] = value
            secrets += found
        doc["auths"] = auths if draw(st.integers(0, 5)) else draw(odd_value)
    if draw(st.booleans()):
        doc["credHelpers"] = draw(st.dictionaries(odd_key, odd_leaf | st.just("ok"), max_size=3))
    if draw(st.booleans()):
        doc["credsStore"] = draw(odd_leaf | st.just("ok"))
    doc.update(draw(st.dictionaries(odd_key, odd_value, max_size=2)))
    if not draw(st.integers(0, 9)):
        return draw(odd_value), secrets
    return doc, secrets


async def runner(helper: str, server_url: str) -> ConfigEntry:
    if helper == "ok":
        return ConfigEntry(username="u", password="p")
    raise aociauth.HelperNotFoundError("no such helper", helper=helper)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=odd_documents(),
    host=st.sampled_from(["r.test", "docker.io", "index.docker.io", "other.test"]),
    repository=st.sampled_from(["", "team", "team/app"]),
)
def test_any_python_document_builds_a_config_or_raises_config_error(
    doc: tuple[object, list[str]], host: str, repository: str
) -> None:
    data, secrets = doc

    def clean(text: str) -> None:
        for secret in secrets:
            assert secret not in text

    try:
        config = ConfigFile.from_dict(data, runner=runner)  # type: ignore[arg-type]
    except ConfigError as exc:
        failed: ConfigError | None = exc
    else:
        failed = None
    if failed is not None:
        clean(str(failed) + repr(failed))
        return

    async def lookups() -> None:
        for call in (
            lambda: config.entry_for_registry(host),
            lambda: config.entry_for_repository(host, repository),
            lambda: config.resolve(host, repository),
        ):
            try:
                result = await call()
            except OCIAuthError as exc:
                clean(str(exc) + repr(exc))
            else:
                clean(repr(result))
        assert all(isinstance(n, str) for n in config.namespaces(host))

    asyncio.run(lookups())


# -- a token's own claims ---------------------------------------------------------------------

actions_st = st.sampled_from(["pull", "push", "*", ""]) | json_value
valid_entry = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["repository", "registry"]) | st.text(max_size=5),
        "name": st.text(max_size=12),
        "actions": st.lists(actions_st, max_size=4),
    }
)
access_entry = st.one_of(*[valid_entry] * 6, json_value)
good_claims = st.fixed_dictionaries(
    {"access": st.one_of(*[st.lists(access_entry, max_size=4)] * 3, json_value)},
    optional={"sub": st.text(max_size=5), "exp": number},
)
claims_st = st.one_of(good_claims, good_claims, good_claims, json_value)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@st.composite
def jwt_like(draw: st.DrawFn) -> tuple[str, object]:
    claims = draw(claims_st)
    payload = json.dumps(claims).encode()
    how = draw(st.sampled_from(["plain"] * 4 + ["padded", "garbage", "utf-16", "parts"]))
    if how == "padded":
        middle = base64.urlsafe_b64encode(payload).decode()
    elif how == "garbage":
        middle = draw(st.from_regex(r"[A-Za-z0-9\-._~+/]{0,30}={0,2}", fullmatch=True))
    elif how == "utf-16":
        middle = b64url(json.dumps(claims).encode("utf-16"))
    else:
        middle = b64url(payload)
    parts = ["eyJhbGciOiJFUzI1NiJ9", middle, "c2ln"]
    if how == "parts":
        parts = parts[: draw(st.integers(0, 2))] + draw(st.lists(st.just("x"), max_size=2))
    return ".".join(parts), claims


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=jwt_like())
def test_a_tokens_claims_are_read_without_raising_and_never_widened(
    token: tuple[str, object],
) -> None:
    """What a token says it grants is read from hostile input: any token gives a Scope or
    None (unknown), and the Scope holds nothing the claims do not list."""
    value, claims = token
    granted = granted_scope(value)
    if granted is None:
        return
    assert isinstance(granted, aociauth.Scope)
    assert isinstance(claims, dict)
    listed = {
        (e.get("type"), e.get("name"), a)
        for e in claims["access"]
        if isinstance(e, dict) and isinstance(e.get("actions"), list)
        for a in e["actions"]
        if isinstance(a, str)
    }
    for rs in granted:
        assert (rs.resource_type, rs.resource, rs.action) in listed
