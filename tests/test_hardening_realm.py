"""The realm policy, seen through the middleware: where a challenge may send credentials.

A Bearer challenge names its token endpoint; a hostile registry can name any
URL. Every server here is 127.0.0.1, reached by the names the test gives it
(``aociauth.testing.client.LoopbackResolver``), so each test sets up the host relation it
is about: another host (``reg.test`` -> ``auth.test``), the same site
(``reg.example.com`` -> ``auth.example.com``), a trusted pair, a downgrade
to http, an internal address. Each test says what it shows.
(security.md T-R1..T-R10; BEHAVIOUR.md part 2 "Hardening".)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

import aociauth
from aociauth import RealmPolicy, RealmPolicyError
from aociauth.testing import Registry, TokenServer
from aociauth.testing.client import loopback_client
from aociauth.testing.leaks import PASSWORD, assert_clean, exception_texts
from aociauth.testing.registry import OCI_MANIFEST
from aociauth.testing.scripted import ScriptedServer
from aociauth.testing.tls import TLSContexts

USER = "alice"
MANIFEST = "/v2/team/app/manifests/latest"

#: Seconds any single scenario may take before the test calls it a hang.
BOUND = 20.0


@pytest.fixture
async def ts() -> AsyncIterator[TokenServer]:
    async with TokenServer(users={USER: PASSWORD}) as server:
        yield server


async def pull_through(
    ts: TokenServer, realm: str, registry_name: str = "reg.test", **params: object
) -> tuple[int | None, BaseException | None, aociauth.AuthMiddleware, str]:
    """Pull a manifest from a bearer registry on ``registry_name`` whose challenge names ``realm``.

    Returns the status (or the error), the middleware and the registry's ``host:port``.
    """
    async with Registry(auth="bearer", token_server=ts, realm=realm) as reg:
        reg.seed_image("team/app")
        host = f"{registry_name}:{reg.port}"
        config = aociauth.ConfigFile.from_dict(
            {"auths": {host: {"username": USER, "password": PASSWORD}}}
        )
        url = f"http://{host}{MANIFEST}"
        async with loopback_client(config, **params) as (mw, session):
            try:
                async with await asyncio.wait_for(
                    session.get(url, headers={"Accept": OCI_MANIFEST}), BOUND
                ) as r:
                    return r.status, None, mw, host
            except aiohttp.ClientError as exc:
                return None, exc, mw, host


async def test_realm_on_another_host_is_asked_anonymously_with_a_warning(
    ts: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aociauth")
    status, exc, mw, host = await pull_through(ts, f"http://auth.test:{ts.port}/token")
    assert exc is None
    # Anonymous pull is granted, so the pull still works, without alice's password.
    assert status == 200
    assert [(r.kind, r.username) for r in ts.requests] == [("get_anonymous", None)]
    assert mw.stats.anonymous_realm_downgrades == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert host in message
    assert "auth.test" in message
    assert PASSWORD not in caplog.text


async def test_strict_policy_refuses_a_realm_on_another_host(ts: TokenServer) -> None:
    status, exc, _, host = await pull_through(
        ts, f"http://auth.test:{ts.port}/token", realm_policy=RealmPolicy(strict=True)
    )
    assert status is None
    assert isinstance(exc, RealmPolicyError)
    assert isinstance(exc, aociauth.OCIAuthError)
    assert isinstance(exc, aiohttp.ClientError)
    assert exc.registry == host
    assert exc.step == "realm"
    assert "auth.test" in str(exc)
    assert ts.counters.requests == 0
    assert_clean(exception_texts(exc))


@pytest.mark.parametrize(
    ("realm", "why"),
    [
        ("http://alice:{pw}@reg.test:{port}/token", "userinfo"),
        ("http://{pw}@reg.test:{port}/token", "userinfo"),
        ("ftp://reg.test:{port}/token", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("data:application/json,{{}}", "scheme"),
        ("//reg.test:{port}/token", "absolute"),
    ],
)
async def test_unusable_realms_get_no_request_at_all(ts: TokenServer, realm: str, why: str) -> None:
    """Userinfo (it would be sent as Basic by some clients) and non-http realms are refused.

    The token server behind ``reg.test`` records nothing, and the error names
    the problem without repeating the userinfo.
    """
    status, exc, _, _ = await pull_through(ts, realm.format(pw=PASSWORD, port=ts.port))
    assert isinstance(exc, RealmPolicyError), (status, exc)
    assert why in str(exc)
    assert ts.counters.requests == 0
    assert_clean(exception_texts(exc))


@pytest.mark.parametrize(
    "realm",
    [
        # This one is the real token server: only the refusal keeps the request from it.
        "http://127.0.0.1:{port}/token",
        "http://localhost:{port}/token",
        "http://2130706433:{port}/token",  # 127.0.0.1 as inet_aton reads it
        "http://[::ffff:127.0.0.1]:{port}/token",
        "http://0.0.0.0:{port}/token",
        "http://10.0.0.5/token",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/token",
        "http://[fd00:ec2::254]/token",
    ],
)
async def test_internal_realm_from_a_public_registry_is_refused(
    ts: TokenServer, realm: str
) -> None:
    """reg.example.com is a public name; its challenge may not aim at internal addresses (SSRF).

    Refused before connecting: a RealmPolicyError (not a connection error),
    and the token server listening at 127.0.0.1 records nothing.
    """
    status, exc, _, _ = await pull_through(
        ts, realm.format(port=ts.port), registry_name="reg.example.com"
    )
    assert isinstance(exc, RealmPolicyError), (status, exc)
    assert "local or private" in str(exc)
    assert ts.counters.requests == 0


async def test_relative_realm_is_the_registrys_own_origin() -> None:
    """``realm="/token"`` resolves against the registry (same origin by construction)."""

    async def registry(req: web.Request) -> web.StreamResponse:
        if req.path == "/token":
            return await token_endpoint()(req)
        if req.headers.get("Authorization") == "Bearer tok-alice":
            return web.Response(text="ok")
        challenge = 'Bearer realm="/token",service="svc",scope="repository:team/app:pull"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    async with ScriptedServer(registry) as reg:
        config = aociauth.ConfigFile.from_dict(
            {"auths": {f"reg.test:{reg.port}": {"username": USER, "password": PASSWORD}}}
        )
        async with (
            loopback_client(config) as (_, session),
            session.get(reg.url_for(MANIFEST, "reg.test")) as r,
        ):
            assert r.status == 200
    assert [s.path for s in reg.requests] == [MANIFEST, "/token", MANIFEST]


async def test_loopback_registry_may_use_its_own_host_but_not_localhost(ts: TokenServer) -> None:
    """A registry at 127.0.0.1 may send its clients to 127.0.0.1 on another port (ggcr #2302),
    not to ``localhost``: a name is not the registry's address, however it resolves."""
    status, exc, _, _ = await pull_through(
        ts, f"http://127.0.0.1:{ts.port}/token", registry_name="127.0.0.1"
    )
    assert (status, exc) == (200, None)
    assert [r.kind for r in ts.requests] == ["get_basic"]
    ts.reset_counters()
    status, exc, _, _ = await pull_through(
        ts, f"http://localhost:{ts.port}/token", registry_name="127.0.0.1"
    )
    assert isinstance(exc, RealmPolicyError)
    assert ts.counters.requests == 0
    # allow_private_realms lifts the address rule only: localhost is still another
    # host over http, so it is asked without credentials.
    status, exc, mw, _ = await pull_through(
        ts,
        f"http://localhost:{ts.port}/token",
        registry_name="127.0.0.1",
        realm_policy=RealmPolicy(allow_private_realms=True),
    )
    assert (status, exc) == (200, None)
    assert [(r.kind, r.username) for r in ts.requests] == [("get_anonymous", None)]
    assert mw.stats.anonymous_realm_downgrades == 1


# -- over https: trusted pairs, same site, downgrades ----------------------------------


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_endpoint() -> Handler:
    """Hands out ``tok-alice`` for alice's Basic credentials, ``tok-anon`` otherwise."""

    async def handler(req: web.Request) -> web.StreamResponse:
        auth = (
            aiohttp.BasicAuth.decode(req.headers["Authorization"])
            if "Authorization" in req.headers
            else None
        )
        who = (
            "alice"
            if auth is not None and (auth.login, auth.password) == (USER, PASSWORD)
            else "anon"
        )
        return web.json_response({"token": f"tok-{who}"})

    return handler


async def https_pull(
    tls: TLSContexts,
    registry_name: str,
    realm_of: Callable[[int], str],
    config_hosts: dict[str, str] | None = None,
    **params: object,
) -> tuple[int | None, BaseException | None, list[str | None], aociauth.AuthMiddleware]:
    """Pull over https from ``registry_name``; return what the token endpoint was sent.

    The registry answers 200 to any bearer token and 401 with a challenge
    naming ``realm_of(token_port)`` otherwise; the answer is the list of
    Basic users the token endpoint saw (None: anonymous).
    """

    async def registry(req: web.Request) -> web.StreamResponse:
        if req.headers.get("Authorization", "").startswith("Bearer tok-"):
            return web.Response(text=req.headers["Authorization"])
        challenge = (
            f'Bearer realm="{realm_of(tokens.port)}",service="svc",scope="repository:team/app:pull"'
        )
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    async with (
        ScriptedServer(token_endpoint(), ssl_context=tls.server) as tokens,
        ScriptedServer(registry, ssl_context=tls.server) as reg,
    ):
        host = f"{registry_name}:{reg.port}"
        hosts = config_hosts or {host: PASSWORD}
        config = aociauth.ConfigFile.from_dict(
            {"auths": {h: {"username": USER, "password": pw} for h, pw in hosts.items()}}
        )
        async with loopback_client(config, ssl_context=tls.client, **params) as (mw, session):
            try:
                async with await asyncio.wait_for(
                    session.get(f"https://{host}{MANIFEST}"), BOUND
                ) as r:
                    status: int | None = r.status
                    exc: BaseException | None = None
            except aiohttp.ClientError as e:
                status, exc = None, e
    users = []
    for s in tokens.requests:
        basic = s.header("Authorization")
        users.append(aiohttp.BasicAuth.decode(basic[0]).login if basic else None)
    return status, exc, users, mw


async def test_trusted_pair_gets_credentials_only_when_configured(tls: TLSContexts) -> None:
    realm = lambda port: f"https://auth.test:{port}/token"  # noqa: E731
    status, _, users, _ = await https_pull(tls, "reg.test", realm)
    assert (status, users) == (200, [None])
    policy = RealmPolicy().with_trusted("reg.test", "auth.test")
    status, _, users, mw = await https_pull(tls, "reg.test", realm, realm_policy=policy)
    assert (status, users) == (200, ["alice"])
    assert mw.stats.anonymous_realm_downgrades == 0


async def test_trusted_pair_is_not_a_trusted_realm_for_other_registries(tls: TLSContexts) -> None:
    """evil.test names reg.test's trusted auth.test: evil.test's own credentials do not go
    there (the confused deputy of oras-dotnet#393); the pair is reg.test's alone."""
    policy = RealmPolicy().with_trusted("reg.test", "auth.test")
    status, _, users, mw = await https_pull(
        tls, "evil.test", lambda port: f"https://auth.test:{port}/token", realm_policy=policy
    )
    assert (status, users) == (200, [None])
    assert mw.stats.anonymous_realm_downgrades == 1


async def test_same_site_realm_gets_credentials_unless_turned_off(tls: TLSContexts) -> None:
    realm = lambda port: f"https://auth.example.com:{port}/token"  # noqa: E731
    status, _, users, _ = await https_pull(tls, "reg.example.com", realm)
    assert (status, users) == (200, ["alice"])
    status, _, users, _ = await https_pull(
        tls, "reg.example.com", realm, realm_policy=RealmPolicy(allow_same_site=False)
    )
    assert (status, users) == (200, [None])


async def test_http_realm_for_an_https_registry_is_a_downgrade(tls: TLSContexts) -> None:
    """Same host name, but plain http: anonymous (T-R2), or refused in strict mode."""

    async def plain_tokens(req: web.Request) -> web.StreamResponse:
        return await token_endpoint()(req)

    async with ScriptedServer(plain_tokens) as plain:
        realm = lambda _port: f"http://reg.test:{plain.port}/token"  # noqa: E731
        status, _, _, mw = await https_pull(tls, "reg.test", realm)
        assert status == 200
        assert [s.header("Authorization") for s in plain.requests] == [[]]
        assert mw.stats.anonymous_realm_downgrades == 1
        status, exc, _, _ = await https_pull(
            tls, "reg.test", realm, realm_policy=RealmPolicy(strict=True)
        )
        assert isinstance(exc, RealmPolicyError)
        assert "plain http" in str(exc)
        assert len(plain.requests) == 1
