"""The in-process TokenServer speaks the distribution token protocol and misbehaves on demand."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from aociauth.testing.tokenserver import Access, TokenServer

SCOPE_AB = "repository:team/app:pull,push"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


@pytest.fixture
async def ts() -> AsyncIterator[TokenServer]:
    async with TokenServer(users={"alice": "secret-password"}) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # A fresh connection per request, so that aiohttp's retry of a request
    # whose kept-alive connection was dropped cannot hide a "drop".
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client:
        yield client


async def get_token(
    session: aiohttp.ClientSession,
    ts: TokenServer,
    params: list[tuple[str, str]],
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with session.get(ts.realm, params=params, headers=headers) as resp:
        body = await resp.json(content_type=None) if resp.status == 200 else await resp.text()
        return resp.status, body


def access_of(ts: TokenServer, token: str) -> list[dict[str, Any]]:
    claims = ts.issuer.verify(token)
    access: list[dict[str, Any]] = claims["access"]
    return access


async def test_anonymous_get_is_granted_pull_only(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    status, body = await get_token(session, ts, [("service", ts.service), ("scope", SCOPE_AB)])
    assert status == 200
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert body["issued_at"].endswith("Z")
    assert "refresh_token" not in body
    assert access_of(ts, body["token"]) == [
        {"type": "repository", "name": "team/app", "actions": ["pull"]}
    ]
    assert ts.issuer.verify(body["token"])["sub"] == ""
    assert ts.counters.get_anonymous == 1
    assert ts.counters.get_basic == 0
    assert ts.counters.tokens_issued == 1


async def test_basic_user_gets_every_action_asked_for(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    status, body = await get_token(
        session,
        ts,
        [("service", ts.service), ("scope", SCOPE_AB), ("scope", "registry:catalog:*")],
        basic("alice", "secret-password"),
    )
    assert status == 200
    assert ts.issuer.verify(body["token"])["sub"] == "alice"
    assert access_of(ts, body["token"]) == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    assert ts.counters.get_basic == 1
    assert ts.requests[0].username == "alice"
    assert ts.requests[0].subject == "alice"


async def test_wrong_password_gets_401_and_is_counted(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    status, _ = await get_token(
        session, ts, [("service", ts.service)], basic("alice", "not-the-password")
    )
    assert status == 401
    status, _ = await get_token(session, ts, [("service", ts.service)], basic("mallory", "x"))
    assert status == 401
    assert ts.counters.unauthorized == 2
    assert ts.counters.tokens_issued == 0
    assert [r.status for r in ts.requests] == [401, 401]
    assert [r.subject for r in ts.requests] == [None, None]


async def test_repeated_and_space_separated_scopes_are_merged(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    status, body = await get_token(
        session,
        ts,
        [
            ("service", ts.service),
            ("scope", "repository:a:pull repository:b:push"),
            ("scope", "repository:c:pull,push"),
            ("scope", "repository:localhost:5000/d:pull"),
        ],
        basic("alice", "secret-password"),
    )
    assert status == 200
    assert ts.requests[0].scopes == (
        "repository:a:pull",
        "repository:b:push",
        "repository:c:pull,push",
        "repository:localhost:5000/d:pull",
    )
    assert ts.requests[0].query.getall("scope")[1] == "repository:c:pull,push"
    assert [(a["name"], a["actions"]) for a in access_of(ts, body["token"])] == [
        ("a", ["pull"]),
        ("b", ["push"]),
        ("c", ["pull", "push"]),
        ("localhost:5000/d", ["pull"]),
    ]


async def test_offline_token_needs_client_id_and_a_user(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    alice = basic("alice", "secret-password")
    offline = [("service", ts.service), ("offline_token", "true")]
    _, with_client = await get_token(session, ts, [*offline, ("client_id", "tests")], alice)
    _, without_client = await get_token(session, ts, offline, alice)
    _, anonymous = await get_token(session, ts, [*offline, ("client_id", "tests")])
    assert ts.refresh_tokens == {with_client["refresh_token"]: "alice"}
    assert "refresh_token" not in without_client
    assert "refresh_token" not in anonymous
    assert ts.counters.refresh_tokens_issued == 1


async def test_post_password_grant_then_refresh_grant(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": "secret-password",
        "service": ts.service,
        "client_id": "tests",
        "access_type": "offline",
        "scope": "repository:a:pull repository:b:pull,push",
    }
    async with session.post(ts.realm, data=form) as resp:
        assert resp.status == 200
        first = await resp.json()
    assert first["scope"] == "repository:a:pull repository:b:pull,push"
    assert ts.issuer.verify(first["token"])["sub"] == "alice"
    refresh = first["refresh_token"]

    grant = {
        "grant_type": "refresh_token",
        "refresh_token": refresh,
        "service": ts.service,
        "client_id": "tests",
        "scope": "repository:c:push",
    }
    for _ in range(2):
        async with session.post(ts.realm, data=grant) as resp:
            assert resp.status == 200
            body = await resp.json()
        # Without rotation the same refresh token stays valid and none is returned.
        assert "refresh_token" not in body
        assert access_of(ts, body["access_token"]) == [
            {"type": "repository", "name": "c", "actions": ["push"]}
        ]
    assert ts.counters.post_password == 1
    assert ts.counters.post_refresh == 2
    assert ts.requests[1].form["refresh_token"] == refresh
    assert ts.requests[1].subject == "alice"


async def test_post_wrong_password_or_unknown_refresh_token_is_401(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    forms: list[dict[str, str]] = [
        {"grant_type": "password", "username": "alice", "password": "nope", "client_id": "t"},
        {"grant_type": "refresh_token", "refresh_token": "forged", "client_id": "t"},
    ]
    for form in forms:
        async with session.post(ts.realm, data=form) as resp:
            assert resp.status == 401
    assert ts.counters.unauthorized == 2


async def test_post_needs_client_id_and_a_known_grant_type(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    refresh = ts.issue_refresh_token("alice")
    async with session.post(
        ts.realm, data={"grant_type": "refresh_token", "refresh_token": refresh}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "invalid_request"
    async with session.post(
        ts.realm, data={"grant_type": "client_credentials", "client_id": "t"}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "unsupported_grant_type"
    assert ts.counters.post_other == 1
    assert ts.counters.tokens_issued == 0


async def test_rotating_refresh_tokens_invalidates_the_old_one(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    ts.rotate_refresh_tokens = True
    current = ts.issue_refresh_token("alice")
    used = []
    for _ in range(3):
        form = {"grant_type": "refresh_token", "refresh_token": current, "client_id": "t"}
        async with session.post(ts.realm, data=form) as resp:
            assert resp.status == 200
            body = await resp.json()
        used.append(current)
        current = body["refresh_token"]
        assert current not in used
    assert list(ts.refresh_tokens) == [current]
    stale = {"grant_type": "refresh_token", "refresh_token": used[0], "client_id": "t"}
    async with session.post(ts.realm, data=stale) as resp:
        assert resp.status == 401
    assert ts.counters.refresh_tokens_issued == 4


async def test_password_never_reaches_the_records(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    refresh = ts.issue_refresh_token("alice")
    form = {"grant_type": "password", "username": "alice", "password": "secret-password"}
    async with session.post(ts.realm, data={**form, "client_id": "t"}):
        pass
    refresh_form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": "t"}
    async with session.post(ts.realm, data=refresh_form):
        pass
    await get_token(session, ts, [], basic("alice", "secret-password"))
    assert ts.requests[0].form["password"] == "<redacted>"
    for record in ts.requests:
        assert "secret-password" not in repr(record)
        assert refresh not in repr(record)
    assert "secret-password" not in repr(ts)


async def test_picky_server_rejects_too_much_scope_instead_of_a_subset(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    ts.grants = {"alice": {"repository:foo": {"pull"}}}
    alice = basic("alice", "secret-password")
    too_much = [("scope", "repository:foo:pull"), ("scope", "repository:bar:pull")]
    status, body = await get_token(session, ts, too_much, alice)
    assert status == 200
    assert [a["name"] for a in access_of(ts, body["token"])] == ["foo"]

    ts.picky = True
    status, _ = await get_token(session, ts, too_much, alice)
    assert status == 401
    status, body = await get_token(session, ts, [("scope", "repository:foo:pull")], alice)
    assert status == 200
    assert ts.counters.unauthorized == 1
    assert ts.counters.tokens_issued == 2


async def test_grants_mapping_uses_patterns_and_anonymous_grants_apply_to_users(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    ts.grants = {
        "alice": {"repository:team/*": {"pull", "push"}, "registry:catalog": {"*"}},
        None: {"repository:public/*": {"pull"}},
    }
    scopes = [
        ("scope", "repository:team/app:pull,push,delete"),
        ("scope", "repository:public/base:pull,push"),
        ("scope", "repository:other:pull"),
        ("scope", "registry:catalog:*"),
        ("scope", "registry:catalog:pull"),
    ]
    _, alice = await get_token(session, ts, scopes, basic("alice", "secret-password"))
    _, anonymous = await get_token(session, ts, scopes)
    assert access_of(ts, alice["token"]) == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
        {"type": "repository", "name": "public/base", "actions": ["pull"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    assert access_of(ts, anonymous["token"]) == [
        {"type": "repository", "name": "public/base", "actions": ["pull"]}
    ]


async def test_grants_function_is_asked_per_action(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    asked: list[tuple[str | None, Access]] = []

    def grants(subject: str | None, access: Access) -> bool:
        asked.append((subject, access))
        return access.action != "push"

    ts.grants = grants
    _, body = await get_token(session, ts, [("scope", SCOPE_AB)], basic("alice", "secret-password"))
    assert asked == [
        ("alice", Access("repository", "team/app", "pull")),
        ("alice", Access("repository", "team/app", "push")),
    ]
    assert access_of(ts, body["token"])[0]["actions"] == ["pull"]


@pytest.mark.parametrize(
    ("status", "counter"), [(404, "post_rejected_404"), (405, "post_rejected_405")]
)
async def test_post_can_be_unsupported(
    ts: TokenServer, session: aiohttp.ClientSession, status: int, counter: str
) -> None:
    ts.support_post = False
    ts.post_unsupported_status = status
    refresh = ts.issue_refresh_token("alice")
    form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": "t"}
    async with session.post(ts.realm, data=form) as resp:
        assert resp.status == status
        if status == 405:
            assert resp.headers["Allow"] == "GET"
    assert getattr(ts.counters, counter) == 1
    assert ts.counters.post_refresh == 0
    status_get, _ = await get_token(session, ts, [("scope", SCOPE_AB)])
    assert status_get == 200


@pytest.mark.parametrize(
    ("field", "present"),
    [("both", {"token", "access_token"}), ("token", {"token"}), ("access_token", {"access_token"})],
)
async def test_token_field_choice(
    ts: TokenServer, session: aiohttp.ClientSession, field: Any, present: set[str]
) -> None:
    ts.token_field = field
    _, body = await get_token(session, ts, [])
    assert {"token", "access_token"} & set(body) == present


async def test_expires_in_can_be_left_out(ts: TokenServer, session: aiohttp.ClientSession) -> None:
    ts.expires_in = None
    _, body = await get_token(session, ts, [])
    assert "expires_in" not in body
    claims = ts.issuer.verify(body["token"])
    assert claims["exp"] - claims["iat"] == 60


async def test_wrong_service_is_a_bad_request(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    status, _ = await get_token(session, ts, [("service", "someone-else")])
    assert status == 400
    ts.check_service = False
    status, _ = await get_token(session, ts, [("service", "someone-else")])
    assert status == 200


async def test_fail_next_answers_with_the_status_then_recovers(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    ts.fail_next(2, status=429, retry_after=3)
    for _ in range(2):
        async with session.get(ts.realm) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "3"
    status, _ = await get_token(session, ts, [])
    assert status == 200
    assert ts.counters.failures_injected == 2
    assert ts.counters.requests == 3
    assert ts.counters.tokens_issued == 1


async def test_failure_rate_is_reproducible_with_a_seed(session: aiohttp.ClientSession) -> None:
    outcomes = []
    for _ in range(2):
        async with TokenServer(failure_rate=0.5, seed=7) as server:
            statuses = []
            for _ in range(20):
                async with session.get(server.realm) as resp:
                    statuses.append(resp.status)
            outcomes.append(statuses)
            assert server.counters.failures_injected == statuses.count(503)
    assert outcomes[0] == outcomes[1]
    assert 0 < outcomes[0].count(503) < 20
    assert set(outcomes[0]) == {200, 503}


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("html", lambda r, b: r.content_type == "text/html" and b.startswith(b"<!DOCTYPE")),
        ("empty", lambda r, b: r.status == 200 and b == b""),
        ("not_json", lambda r, b: r.content_type == "application/json" and b[:6] == b"token="),
        ("json_array", lambda r, b: b.startswith(b'[{"token":')),
        ("no_token", lambda r, b: b.startswith(b'{"expires_in":') and b"token" not in b),
        ("bad_token_chars", lambda r, b: b"\\r\\n" in b and b" " in b),
    ],
)
async def test_garbage_answers(
    ts: TokenServer, session: aiohttp.ClientSession, kind: str, check: Any
) -> None:
    ts.respond_with(kind)
    async with session.get(ts.realm) as resp:
        assert check(resp, await resp.read())
    status, _ = await get_token(session, ts, [])
    assert status == 200
    assert ts.counters.failures_injected == 1


async def test_respond_with_applies_to_the_next_n_requests(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    ts.respond_with("html", 3)
    types = []
    for _ in range(4):
        async with session.get(ts.realm) as resp:
            types.append(resp.content_type)
    assert types == ["text/html"] * 3 + ["application/json"]
    with pytest.raises(ValueError, match="unknown kind"):
        ts.respond_with("teapot")


async def test_huge_body_is_streamed_and_the_server_stops_mid_stream(
    session: aiohttp.ClientSession,
) -> None:
    ts = TokenServer()
    await ts.start()
    try:
        ts.respond_with("huge")
        resp = await session.get(ts.realm)
        assert resp.content_length == 50 * 1024 * 1024
        assert (await resp.content.readexactly(10)) == b'{"token":"'
        await ts.stop()
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
        resp.release()
    finally:
        await ts.stop()


async def test_redirect_goes_to_a_token_endpoint_that_counts_followers(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    ts.respond_with("redirect", 2)
    async with session.get(ts.realm, params={"scope": SCOPE_AB}, allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"].startswith(f"{ts.url}/token-redirected?")
    assert ts.counters.redirects_followed == 0
    async with session.get(ts.realm, params={"scope": SCOPE_AB}) as resp:
        assert resp.status == 200
        assert "token" in await resp.json()
    assert ts.counters.redirects_followed == 1
    assert ts.requests[-1].path == "/token-redirected"
    assert ts.requests[-1].scopes == ("repository:team/app:pull,push",)


async def test_redirect_to_a_chosen_location(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    ts.respond_with("redirect", location="http://127.0.0.1:9/elsewhere")
    async with session.get(ts.realm, allow_redirects=False) as resp:
        assert resp.headers["Location"] == "http://127.0.0.1:9/elsewhere"


async def test_slow_body_sends_headers_and_stalls_until_the_server_stops(
    session: aiohttp.ClientSession,
) -> None:
    ts = TokenServer()
    await ts.start()
    try:
        ts.respond_with("slow_body")
        resp = await session.get(ts.realm)
        assert resp.status == 200
        assert (await resp.content.readexactly(5)) == b'{"tok'
        assert not resp.content.at_eof()
        assert ts.counters.in_flight == 1
        await ts.stop()
        with pytest.raises(aiohttp.ClientError):
            await resp.read()
        resp.release()
        assert ts.counters.in_flight == 0
        assert ts.requests[0].status == 0
    finally:
        await ts.stop()


async def test_drop_closes_the_connection_unanswered(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    # aiohttp sends an idempotent request once more after a disconnect, so
    # both attempts must be dropped for the caller to see it.
    ts.respond_with("drop", 2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with session.get(ts.realm):
            pass
    status, _ = await get_token(session, ts, [])
    assert status == 200
    assert [r.status for r in ts.requests] == [0, 0, 200]
    assert ts.counters.failures_injected == 2


async def test_pause_holds_requests_so_concurrency_can_be_counted(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    ts.pause()
    fetches = [
        asyncio.ensure_future(get_token(session, ts, [("scope", f"repository:r{i}:pull")]))
        for i in range(3)
    ]
    await ts.wait_for_requests(3)
    assert ts.counters.in_flight == 3
    assert ts.counters.tokens_issued == 0
    ts.resume()
    results = await asyncio.gather(*fetches)
    assert [status for status, _ in results] == [200, 200, 200]
    assert ts.counters.max_in_flight == 3
    assert ts.counters.in_flight == 0


async def test_reset_counters_forgets_requests(
    ts: TokenServer, session: aiohttp.ClientSession
) -> None:
    await get_token(session, ts, [])
    ts.reset_counters()
    assert ts.counters.requests == 0
    assert ts.counters.tokens_issued == 0
    assert ts.requests == []
    await get_token(session, ts, [])
    assert ts.counters.requests == 1


async def test_stopping_leaves_no_task_and_frees_the_port() -> None:
    before = asyncio.all_tasks()
    ts = TokenServer()
    async with ts, aiohttp.ClientSession() as client, client.get(ts.realm) as resp:
        assert resp.status == 200
        port = ts.port
    assert not ts.running
    assert asyncio.all_tasks() == before
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=5),
    ):
        pass
    with pytest.raises(RuntimeError, match="not running"):
        _ = ts.url
    await ts.stop()
