"""Credential helpers, end to end through the middleware.

tests/test_helpers.py proves the helper runner itself (protocol, caps,
timeouts, process groups). These tests follow a helper's answer, or its
failure, through the middleware: what the caller sees, what the servers get,
and that one slow helper holds up no other registry (security.md T-H1,
T-H4, T-H8, T-H9, T-H11, T-H13, CVE-2021-41092).

The helper is a small script written for each test; the registry's host name
(``gate.test``, ``secret.test``, ...: all loopback) tells it how to behave.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import aociauth
from aociauth.testing import Registry, TokenServer
from aociauth.testing.client import loopback_client
from aociauth.testing.credhelper import FakeHelper, HelperAnswer, install_credential_helper
from aociauth.testing.leaks import HELPER_SECRET, PASSWORD, assert_clean, exception_texts
from aociauth.testing.scripted import ScriptedServer

#: Seconds any single scenario may take before the test calls it a hang.
BOUND = 20.0


#: What the helper answers, by the registry's host name (token.test's is set by its test).
ANSWERS = {
    "gate.test": HelperAnswer("alice", PASSWORD, wait_for_gate=True),
    "hang.test": HelperAnswer(hang=True),
    "secret.test": HelperAnswer(
        "alice", HELPER_SECRET, stderr="the keychain is locked\n", exit_code=3
    ),
    "garbage.test": HelperAnswer(
        stdout="WARNING: keychain slow\n" + json.dumps({"Username": "a", "Secret": HELPER_SECRET})
    ),
    "reg.test": HelperAnswer("alice", PASSWORD),
}


@pytest.fixture
def helper(tmp_path: Path) -> FakeHelper:
    return install_credential_helper(tmp_path, ANSWERS)


async def basic_registry(req: web.Request) -> web.StreamResponse:
    if req.headers.get("Authorization", "").startswith("Basic "):
        return web.Response(text="ok")
    return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})


async def test_a_slow_helper_for_one_registry_holds_up_no_other(helper: FakeHelper) -> None:
    """gate.test's helper waits for a file the test writes only after twenty requests to
    reg.test (another helper run, another registry) have all been answered."""
    async with ScriptedServer(basic_registry) as gated, ScriptedServer(basic_registry) as other:
        gated_host, other_host = f"gate.test:{gated.port}", f"reg.test:{other.port}"
        config = helper.config({gated_host: helper.name, other_host: helper.name})
        async with loopback_client(config) as (_, session):

            async def get(url: str) -> int:
                async with session.get(url) as r:
                    return r.status

            slow = asyncio.ensure_future(get(gated.url_for("/v2/a/manifests/x", "gate.test")))
            fast = [get(other.url_for(f"/v2/r{i}/manifests/x", "reg.test")) for i in range(20)]
            assert await asyncio.wait_for(asyncio.gather(*fast), BOUND) == [200] * 20
            assert not slow.done()
            assert gated.requests == []
            helper.open_gate()
            assert await asyncio.wait_for(slow, BOUND) == 200
    # One run per registry, asked with the registry's host and nothing but "get".
    runs = sorted((r["argv"], r["url"]) for r in helper.runs())
    assert runs == [
        (["get"], gated_host),
        (["get"], other_host),
    ]


async def test_a_hanging_helper_ends_in_a_bounded_clear_error(helper: FakeHelper) -> None:
    async with ScriptedServer(basic_registry) as reg:
        host = f"hang.test:{reg.port}"
        config = helper.config({host: helper.name}, timeout=0.5)
        async with loopback_client(config) as (_, session):
            with pytest.raises(aociauth.CredentialLookupError) as ei:
                await asyncio.wait_for(
                    session.get(reg.url_for("/v2/a/manifests/x", "hang.test")), BOUND
                )
    assert isinstance(ei.value, aiohttp.ClientError)
    assert isinstance(ei.value.__cause__, aociauth.HelperTimeoutError)
    assert ei.value.registry == host
    assert reg.requests == []


@pytest.mark.parametrize("name", ["secret", "garbage"])
async def test_a_helpers_stdout_never_reaches_the_caller(helper: FakeHelper, name: str) -> None:
    """A failing helper that printed the secret (T-H8), or printed it after a warning (T-H4)."""
    async with ScriptedServer(basic_registry) as reg:
        host = f"{name}.test:{reg.port}"
        async with loopback_client(helper.config({host: helper.name})) as (_, session):
            with pytest.raises(aociauth.CredentialLookupError) as ei:
                await asyncio.wait_for(
                    session.get(reg.url_for("/v2/a/manifests/x", f"{name}.test")), BOUND
                )
    assert isinstance(ei.value.__cause__, aociauth.HelperError)
    assert ei.value.registry == host
    text = exception_texts(ei.value)
    assert_clean(text)
    if name == "secret":
        assert "the keychain is locked" in str(ei.value)  # stderr is what explains
    assert all(HELPER_SECRET not in s.text() for s in reg.requests)


async def test_a_missing_helper_fails_its_registry_and_borrows_nobody_elses_credentials(
    helper: FakeHelper,
) -> None:
    """CVE-2021-41092: the helper named for reg.test does not exist. Neither Docker Hub's
    entry nor another registry's is used instead, and the other registry still works."""
    async with ScriptedServer(basic_registry) as reg, ScriptedServer(basic_registry) as other:
        config = helper.config(
            {f"reg.test:{reg.port}": "no-such-helper"},
            auths={
                "https://index.docker.io/v1/": {"username": "hub", "password": PASSWORD},
                f"other.test:{other.port}": {"username": "bob", "password": PASSWORD},
            },
        )
        async with loopback_client(config) as (_, session):
            with pytest.raises(aociauth.CredentialLookupError) as ei:
                await asyncio.wait_for(
                    session.get(reg.url_for("/v2/a/manifests/x", "reg.test")), BOUND
                )
            assert isinstance(ei.value.__cause__, aociauth.HelperNotFoundError)
            async with session.get(other.url_for("/v2/a/manifests/x", "other.test")) as r:
                assert r.status == 200
    assert reg.requests == []
    basic = [s.header("Authorization")[0] for s in other.requests if s.header("Authorization")]
    assert basic == ["Basic " + base64.b64encode(f"bob:{PASSWORD}".encode()).decode()]


async def test_a_helpers_identity_token_takes_the_refresh_grant(helper: FakeHelper) -> None:
    """``Username: "<token>"`` (T-H9): the secret is a refresh token, posted to the realm;
    no Basic anywhere. (The helper keys on the host name: the registry is token.test.)"""
    async with TokenServer(users={"alice": PASSWORD}) as ts:
        identity_token = ts.issue_refresh_token("alice")
        helper.set_answer("token.test", HelperAnswer("<token>", identity_token))
        realm = f"http://token.test:{ts.port}/token"
        async with Registry(auth="bearer", token_server=ts, realm=realm) as reg:
            digest = reg.seed_blob("team/app", b"blob")
            config = helper.config({f"token.test:{reg.port}": helper.name})
            url = f"http://token.test:{reg.port}/v2/team/app/blobs/{digest}"
            async with loopback_client(config) as (_, session), session.get(url) as r:
                assert r.status == 200
            assert [q.subject for q in reg.requests if q.status == 200] == ["alice"]
            assert reg.counters.basic == 0
    assert [(t.kind, t.form.get("refresh_token")) for t in ts.requests] == [
        ("post_refresh", identity_token)
    ]
    assert ts.counters.get_basic == 0


async def test_fifty_cold_requests_run_the_helper_once(helper: FakeHelper) -> None:
    async with ScriptedServer(basic_registry) as reg:
        config = helper.config({f"reg.test:{reg.port}": helper.name})
        async with loopback_client(config) as (_, session):

            async def get(i: int) -> int:
                async with session.get(reg.url_for(f"/v2/r{i}/manifests/x", "reg.test")) as r:
                    return r.status

            assert (
                await asyncio.wait_for(asyncio.gather(*(get(i) for i in range(50))), BOUND)
                == [200] * 50
            )
    assert len(helper.runs()) == 1
