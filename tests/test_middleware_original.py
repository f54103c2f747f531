"""The Go original's transport scenarios (its auth_test.go), through the aiohttp middleware.

Each scenario runs a scripted target server and auth server on loopback
(:mod:`aociauth.testing.gotest`), like the Go tests' httptest servers, and drives
requests through ``aiohttp.ClientSession(middlewares=[mw])``.
"""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import pytest
from aiohttp import web
from multidict import MultiDict

import aociauth
from aociauth import (
    ConfigEntry,
    RequestInfo,
    Scope,
    new_scope,
    parse_scope,
    with_request_info,
    with_scope,
)
from aociauth.testing.gotest import (
    TESTUSER,
    HTTPError,
    assert_request,
    basic_of,
    bearer_challenge,
    creds_for,
    echo_token,
    repo_gate,
    scope_of,
    start,
    token_for,
)
from aociauth.testing.pytest_plugin import ClientFactory
from aociauth.testing.scripted import ConfigFunc

# -- the scenarios -----------------------------------------------------------


async def test_basic_auth(stack: list[object], oci_client: ClientFactory) -> None:
    async def gate(req: web.Request) -> None:
        if basic_of(req) != ("testuser", "testpassword"):
            raise HTTPError(401, {"Www-Authenticate": "Basic"})

    s = await start(gate)
    stack.append(s)
    session = await oci_client(creds_for(s, TESTUSER))
    await assert_request(session, s.url("/test"))
    # One 401 to learn the challenge; afterwards Basic goes with every request.
    assert [r.headers.get("Authorization") is None for r in s.target_hits] == [
        True,
        False,
        False,
    ]


async def test_bearer_auth(stack: list[object], oci_client: ClientFactory) -> None:
    test_scope = parse_scope("repository:foo:push,pull")

    async def auth(req: web.Request, form: MultiDict[str]) -> dict[str, object]:
        if basic_of(req) != ("testuser", "testpassword"):
            raise HTTPError(401)
        requested = parse_scope(form.get("scope", ""))
        assert requested == test_scope
        assert form.getall("service", []) == ["someService"]
        return {"token": token_for(requested)}

    async def gate(req: web.Request) -> None:
        if "Authorization" not in req.headers:
            raise HTTPError(
                401,
                bearer_challenge(s.realm, test_scope),
            )
        assert scope_of(req) == test_scope

    s = await start(gate, auth)
    stack.append(s)
    session = await oci_client(creds_for(s, TESTUSER))
    await assert_request(session, s.url("/test"))
    assert len(s.auth_hits) == 1


async def test_bearer_auth_additional_scope(stack: list[object], oci_client: ClientFactory) -> None:
    required = parse_scope("repository:foo:push,pull")
    additional = parse_scope("repository:bar:pull somethingElse")

    async def auth(req: web.Request, form: MultiDict[str]) -> dict[str, object]:
        if basic_of(req) != ("testuser", "testpassword"):
            raise HTTPError(401)
        requested = parse_scope(" ".join(form.getall("scope", [])))
        assert requested == required.union(additional)
        assert form.getall("service", []) == ["someService"]
        return {"token": token_for(requested)}

    async def gate(req: web.Request) -> None:
        if "Authorization" not in req.headers:
            raise HTTPError(
                401,
                bearer_challenge(s.realm, required),
            )
        assert scope_of(req) == required.union(additional)

    s = await start(gate, auth)
    stack.append(s)
    session = await oci_client(creds_for(s, TESTUSER))
    with with_scope(additional):
        await assert_request(session, s.url("/test"))
    assert len(s.auth_hits) == 1


async def test_bearer_auth_requires_exact_scope(
    stack: list[object], oci_client: ClientFactory
) -> None:
    required = parse_scope("repository:foo:pull,push")
    exact = "other repository:foo:push,pull"
    exact_token = base64.b64encode(f"token-{exact}".encode()).decode()

    async def auth(req: web.Request, form: MultiDict[str]) -> dict[str, object]:
        if basic_of(req) != ("testuser", "testpassword"):
            raise HTTPError(401)
        if " ".join(form.getall("scope", [])) != exact:
            raise HTTPError(401)
        return {"token": exact_token}

    async def gate(req: web.Request) -> None:
        if "Authorization" not in req.headers:
            raise HTTPError(
                401,
                bearer_challenge(s.realm, exact),
            )
        assert req.headers["Authorization"] == f"Bearer {exact_token}"

    s = await start(gate, auth)
    stack.append(s)
    session = await oci_client(creds_for(s, TESTUSER))
    await assert_request(session, s.url("/test"), required)
    assert len(s.auth_hits) == 1


async def test_auth_not_available_after_challenge(
    stack: list[object], oci_client: ClientFactory
) -> None:
    async def gate(req: web.Request) -> None:
        assert "Authorization" not in req.headers, "authorization unexpectedly presented"
        raise HTTPError(401, {"Www-Authenticate": "Basic service=someService"})

    s = await start(gate)
    stack.append(s)
    session = await oci_client(ConfigFunc(lambda host: ConfigEntry()))
    async with session.get(s.url("/test")) as resp:
        assert resp.status == 401
    assert len(s.target_hits) == 1


async def test_401_with_just_acquired_token_becomes_403(
    stack: list[object], oci_client: ClientFactory
) -> None:
    test_scope = parse_scope("repository:foo:pull")

    async def auth(req: web.Request, form: MultiDict[str]) -> dict[str, object]:
        requested = parse_scope(form.get("scope", ""))
        assert requested == test_scope
        assert form.getall("service", []) == ["someService"]
        return {"token": token_for(requested)}

    async def gate(req: web.Request) -> None:
        challenge = bearer_challenge(s.realm, test_scope)
        if "Authorization" in req.headers:
            assert scope_of(req) == test_scope
        raise HTTPError(401, challenge)

    s = await start(gate, auth)
    stack.append(s)
    session = await oci_client(ConfigFunc(lambda host: ConfigEntry()))
    async with session.get(s.url("/test")) as resp:
        assert resp.status == 403
        assert resp.content_type == "application/json"
        body = await resp.json()
    # The original's code and message; ours goes on to say why (no credentials: anonymous).
    (error,) = body["errors"]
    assert error["code"] == "DENIED"
    assert error["message"] == (
        "unauthorized response with freshly acquired auth token; "
        f"registry {s.host} refused a token asked for anonymously: "
        "no credentials were found (the configured ConfigFunc had none)"
    )
    assert error["detail"]["anonymous"] is True
    assert len(s.target_hits) == 2
    assert len(s.auth_hits) == 1


async def test_401_with_config_credentials_is_returned_as_is(
    stack: list[object], oci_client: ClientFactory
) -> None:
    async def gate(req: web.Request) -> None:
        if "Authorization" not in req.headers:
            raise HTTPError(401, {"Www-Authenticate": "Basic"}, "no auth creds provided")
        raise HTTPError(401, {"Www-Authenticate": "Basic"}, "password mismatch")

    s = await start(gate)
    stack.append(s)
    session = await oci_client(
        ConfigFunc(lambda host: ConfigEntry(username="someuser", password="somepassword"))
    )
    async with session.get(s.url("/test")) as resp:
        assert resp.status == 401
        assert await resp.text() == "password mismatch"


async def test_config_has_access_token(stack: list[object], oci_client: ClientFactory) -> None:
    async def gate(req: web.Request) -> None:
        assert req.headers.get("Authorization") == "Bearer somevalue"

    s = await start(gate)
    stack.append(s)
    session = await oci_client(creds_for(s, ConfigEntry(access_token="somevalue")))
    await assert_request(session, s.url("/test"))


class FailingConfig:
    def __init__(self) -> None:
        self.calls = 0

    async def entry_for_registry(self, host: str) -> ConfigEntry:
        self.calls += 1
        raise RuntimeError("always fails")


async def test_config_error(stack: list[object], oci_client: ClientFactory) -> None:
    async def gate(req: web.Request) -> None:
        raise HTTPError(401)

    s = await start(gate)
    stack.append(s)
    config = FailingConfig()
    session = await oci_client(config)
    # A registry request (by its path, or by a RequestInfo as in the Go test) needs the
    # config before it is sent; its failure is the caller's error, and nothing is sent.
    pattern = r"cannot acquire auth.*always fails"
    with pytest.raises(aociauth.OCIAuthError, match=pattern) as ei:
        await session.get(s.url("/v2/team/app/manifests/v1"))
    assert isinstance(ei.value, aiohttp.ClientError)
    with (
        with_request_info(RequestInfo(Scope())),
        pytest.raises(aociauth.OCIAuthError, match=pattern),
    ):
        await session.get(s.url("/test"))
    assert s.target_hits == []
    assert config.calls == 1  # the failure is remembered, as in the original


async def test_no_config_lookup_for_a_non_registry_request_until_challenged(
    stack: list[object],
    oci_client: ClientFactory,
) -> None:
    """A blob's CDN hop (not a registry API path, no RequestInfo) to a host that has never
    challenged needs no credentials: the config (and a helper) is not asked for it."""
    challenge = {"Www-Authenticate": 'Basic realm="r"'}

    async def gate(req: web.Request) -> None:
        if req.path == "/challenge":
            raise HTTPError(401, challenge)

    s = await start(gate)
    stack.append(s)
    config = FailingConfig()
    session = await oci_client(config)
    async with session.get(s.url("/cdn/blob")) as r:
        assert r.status == 404  # the target's own answer: only /test exists
    assert config.calls == 0
    with pytest.raises(aociauth.OCIAuthError, match="always fails"):
        await session.get(s.url("/challenge"))
    assert config.calls == 1


async def test_later_request_uses_earlier_token_with_larger_scope(
    stack: list[object], oci_client: ClientFactory
) -> None:
    s = await start(repo_gate(lambda: s.realm, strict=True), echo_token)
    stack.append(s)
    session = await oci_client(ConfigFunc(lambda host: ConfigEntry()))
    with with_scope(parse_scope("repository:foo1:pull repository:foo2:pull")):
        await assert_request(session, s.url("/test/foo1"))
        await assert_request(session, s.url("/test/foo2"))
    assert len(s.auth_hits) == 1


async def test_auth_server_rejects_requests_with_too_much_scope(
    stack: list[object], oci_client: ClientFactory
) -> None:
    has = parse_scope("repository:foo:pull")

    async def auth(req: web.Request, form: MultiDict[str]) -> dict[str, object]:
        requested = parse_scope(" ".join(form.getall("scope", [])))
        if not has.contains(requested):
            raise HTTPError(401)
        return {"token": token_for(requested)}

    async def gate(req: web.Request) -> None:
        if "Authorization" not in req.headers:
            raise HTTPError(
                401,
                bearer_challenge(s.realm, has),
            )
        assert scope_of(req).contains(has)

    s = await start(gate, auth)
    stack.append(s)
    session = await oci_client(ConfigFunc(lambda host: ConfigEntry()))
    with with_scope(parse_scope("repository:foo:pull repository:bar:pull")):
        await assert_request(session, s.url("/test"))
    # The wide request is refused once, the required-only one succeeds.
    assert len(s.auth_hits) == 2


async def test_refresh_token_from_config_with_expiry(
    stack: list[object], oci_client: ClientFactory
) -> None:
    required = parse_scope("repository:foo:pull")

    async def auth(req: web.Request, form: MultiDict[str]) -> dict[str, object]:
        assert req.method == "POST"
        assert form.get("grant_type", "") == "refresh_token"
        assert form.get("client_id", "") != ""
        assert form.get("service", "") == "someService"
        assert form.get("refresh_token", "") == "someRefreshToken"
        # A token that expires soon, so the next request needs another.
        return {
            "token": token_for(parse_scope(" ".join(form.getall("scope", [])))),
            "expires_in": 2,
        }

    async def gate(req: web.Request) -> None:
        if "Authorization" not in req.headers:
            raise HTTPError(
                401,
                bearer_challenge(s.realm, required),
            )
        assert scope_of(req).contains(required)

    s = await start(gate, auth)
    stack.append(s)
    session = await oci_client(creds_for(s, ConfigEntry(refresh_token="someRefreshToken")))
    await assert_request(session, s.url("/test"), required)
    # The expiry rule leaves at least a second of leeway (as in the original).
    await asyncio.sleep(1.1)
    await assert_request(session, s.url("/test"), required)
    assert len(s.auth_hits) == 2


async def test_refresh_token_rotated_by_auth_server(
    stack: list[object], oci_client: ClientFactory
) -> None:
    count = 0

    async def auth(req: web.Request, form: MultiDict[str]) -> dict[str, object]:
        nonlocal count
        count += 1
        assert form.get("refresh_token", "") == f"someRefreshToken{count}"
        return {
            "refresh_token": f"someRefreshToken{count + 1}",
            "token": token_for(parse_scope(" ".join(form.getall("scope", [])))),
        }

    s = await start(repo_gate(lambda: s.realm, strict=True), auth)
    stack.append(s)
    session = await oci_client(creds_for(s, ConfigEntry(refresh_token="someRefreshToken1")))
    for i in range(4):
        need = new_scope(aociauth.ResourceScope("repository", f"foo{i}", "pull"))
        await assert_request(session, s.url(f"/test/foo{i}"), need)
    assert count == 4


async def test_relative_realm_is_resolved_against_the_registry(
    stack: list[object], oci_client: ClientFactory
) -> None:
    seen: list[str] = []

    async def gate(req: web.Request) -> None:
        if req.path == "/token":
            seen.append(req.query.get("scope", ""))
            raise HTTPError(200, {"Content-Type": "application/json"}, '{"token": "abc"}')
        if req.headers.get("Authorization") != "Bearer abc":
            raise HTTPError(
                401, {"Www-Authenticate": 'Bearer realm="/token",scope="repository:foo:pull"'}
            )

    s = await start(gate)
    stack.append(s)
    session = await oci_client(ConfigFunc(lambda host: ConfigEntry()))
    async with session.post(s.url("/test"), data=b"test body") as r:
        assert r.status == 200
    assert seen == ["repository:foo:pull"]
