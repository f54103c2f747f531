"""Expiring helper credentials and a ``docker login`` while the program runs, through
the real aiohttp middleware and the httpx adapter, against loopback servers.

A credential helper script on PATH (written here, as the real ones behave: the
server URL on stdin, one JSON answer on stdout) answers from a state file the
test rewrites when the credential "expires", and logs every run; the token
server and registry count what they were sent. Proved by counting: helper
runs, token requests, 401s.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import anyio
import pytest

from aociauth import StdTransportParams, TokenServerError, load_with_env
from aociauth.config import ConfigFile
from aociauth.testing import Registry, TokenServer
from aociauth.testing.adapters import ADAPTERS, AdapterClient, Answer, Harness
from aociauth.testing.registry import OCI_MANIFEST

BURST = 1000

_HELPER = """#!{python}
import json, sys
server = sys.stdin.read().strip()
host = server.split("://", 1)[-1].split("/", 1)[0]
with open({runs!r}, "a") as f:
    f.write(host + "\\n")
with open({state!r}) as f:
    answer = json.load(f).get(host)
if answer is None:
    sys.stdout.write("credentials not found in native keychain\\n")
    sys.exit(1)
sys.stdout.write(json.dumps({{"ServerURL": server, "Username": answer[0], "Secret": answer[1]}}))
"""

#: The Accept header of a manifest pull.
MANIFEST = {"Accept": OCI_MANIFEST}


class Machine:
    """A home directory with a Docker config, and ``docker-credential-expiring`` on PATH."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        self.docker = root / ".docker"
        self.docker.mkdir()
        self.state = root / "helper-state.json"
        self.log = root / "helper-runs.log"
        self.env = {
            "PATH": f"{self.bin}{os.pathsep}{os.defpath}",
            "HOME": str(root),
            "DOCKER_CONFIG": str(self.docker),
            "XDG_RUNTIME_DIR": str(root / "run"),
            "XDG_CONFIG_HOME": str(root / "xdg"),
        }
        helper = self.bin / "docker-credential-expiring"
        helper.write_text(
            _HELPER.format(python=sys.executable, runs=str(self.log), state=str(self.state))
        )
        helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
        self.answers: dict[str, tuple[str, str]] = {}

    def helper_answers(self, host: str, user: str, secret: str) -> None:
        """What the helper hands out for ``host`` from now on (its credential renewed)."""
        self.answers[host] = (user, secret)
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.answers))
        tmp.replace(self.state)

    def helper_runs(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def write_config(self, document: dict[str, object]) -> None:
        """As ``docker login`` does: a new file renamed into place."""
        tmp = self.docker / "config.json.tmp"
        tmp.write_text(json.dumps(document))
        tmp.replace(self.docker / "config.json")

    def load(self) -> ConfigFile:
        return load_with_env(env=self.env)


@pytest.fixture(params=ADAPTERS)
def env(request: pytest.FixtureRequest) -> Harness:
    return Harness(str(request.param))


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


async def burst(c: AdapterClient, url: str, n: int = BURST) -> list[Answer]:
    answers: list[Answer] = []

    async def one() -> None:
        answers.append(await c.get(url, MANIFEST))

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return answers


def manifest(reg: Registry, repository: str) -> str:
    return f"{reg.url}/v2/{repository}/manifests/v1"


@pytest.mark.parametrize("form", ["password", "identity_token"])
async def test_a_burst_refused_with_an_expired_helper_credential_runs_the_helper_once_more(
    env: Harness, machine: Machine, form: str
) -> None:
    """gcloud's access token (a password to the token server) or ACR's refresh token
    (``<token>``) expires; the helper hands out a new one. 1,000 concurrent requests
    that need a new token: one refused token request, one helper run, one new token."""
    try:
        ts = await env.serve(TokenServer(users={"alice": "pw-1"}))
        reg = await env.serve(Registry(auth="bearer", token_server=ts))
        for repository in ("team/before", "team/after"):
            reg.seed_image(repository, "v1")
        if form == "password":
            machine.helper_answers(reg.host, "alice", "pw-1")
        else:
            machine.helper_answers(reg.host, "<token>", ts.issue_refresh_token("alice"))
        machine.write_config({"credHelpers": {reg.host: "expiring"}})
        async with env.client(StdTransportParams(config=machine.load())) as c:
            assert (await c.get(manifest(reg, "team/before"), MANIFEST)).status == 200
            if form == "password":
                ts.users["alice"] = "pw-2"
                machine.helper_answers(reg.host, "alice", "pw-2")
            else:
                ts.refresh_tokens.clear()
                machine.helper_answers(reg.host, "<token>", ts.issue_refresh_token("alice"))
            tokens_before = ts.counters.requests
            answers = await burst(c, manifest(reg, "team/after"))
            stats = c.stats
    finally:
        await env.stop()
    assert [a.status for a in answers] == [200] * BURST
    assert machine.helper_runs() == 2
    assert (stats.helper_runs, stats.credentials_renewed) == (2, 1)
    # The refused one, and the one with the renewed credential.
    assert ts.counters.requests - tokens_before == 2
    assert reg.counters.unauthorized == 1  # the first contact only


async def test_ecr_expired_basic_credentials_are_renewed_once_for_a_burst(
    env: Harness, machine: Machine
) -> None:
    """ECR: Basic to the registry; an expired token is answered 403 "Your
    authorization token has expired", with no challenge."""
    try:
        reg = await env.serve(Registry(auth="basic", users={"AWS": "ecr-1"}))
        for repository in ("team/before", "team/after"):
            reg.seed_image(repository, "v1")
        machine.helper_answers(reg.host, "AWS", "ecr-1")
        machine.write_config({"credHelpers": {reg.host: "expiring"}})
        async with env.client(StdTransportParams(config=machine.load())) as c:
            assert (await c.get(manifest(reg, "team/before"), MANIFEST)).status == 200
            reg.users["AWS"] = "ecr-2"
            reg.expired_passwords.add("ecr-1")
            machine.helper_answers(reg.host, "AWS", "ecr-2")
            sent_before = reg.counters.requests
            answers = await burst(c, manifest(reg, "team/after"))
            stats = c.stats
    finally:
        await env.stop()
    assert [a.status for a in answers] == [200] * BURST
    assert machine.helper_runs() == 2
    assert stats.credentials_renewed == 1
    refused = reg.counters.by_status[403]
    # Each request went out once with what it had, and at most once more: no loop.
    assert 1 <= refused <= BURST
    assert reg.counters.requests - sent_before == BURST + refused
    assert reg.counters.unauthorized == 1


async def test_a_helper_that_hands_out_the_refused_credential_again_is_asked_once_per_interval(
    env: Harness, machine: Machine
) -> None:
    try:
        ts = await env.serve(TokenServer(users={"alice": "pw-1"}))
        reg = await env.serve(Registry(auth="bearer", token_server=ts))
        for i in range(3):
            reg.seed_image(f"team/app{i}", "v1")
        machine.helper_answers(reg.host, "alice", "pw-1")
        machine.write_config({"credHelpers": {reg.host: "expiring"}})
        async with env.client(StdTransportParams(config=machine.load())) as c:
            assert (await c.get(manifest(reg, "team/app0"), MANIFEST)).status == 200
            ts.users["alice"] = "pw-2"  # expired, and the helper does not know yet
            for i in (1, 2):
                with pytest.raises(TokenServerError) as caught:
                    await c.get(manifest(reg, f"team/app{i}"), MANIFEST)
                assert caught.value.status == 401
            stats = c.stats
    finally:
        await env.stop()
    assert machine.helper_runs() == 2  # the first lookup, one renewal: not one per request
    assert stats.credentials_renewed == 1


async def test_a_docker_login_while_the_program_runs_is_picked_up(
    env: Harness, machine: Machine
) -> None:
    def login(password: str) -> None:
        auth = base64.b64encode(f"alice:{password}".encode()).decode()
        machine.write_config({"auths": {reg.host: {"auth": auth}}})

    try:
        ts = await env.serve(TokenServer(users={"alice": "pw-1"}))
        reg = await env.serve(Registry(auth="bearer", token_server=ts))
        for repository in ("team/before", "team/after"):
            reg.seed_image(repository, "v1")
        login("pw-1")
        params = StdTransportParams(config=machine.load(), config_check_interval=0)
        async with env.client(params) as c:
            assert (await c.get(manifest(reg, "team/before"), MANIFEST)).status == 200
            ts.users["alice"] = "pw-2"
            login("pw-2")
            assert (await c.get(manifest(reg, "team/after"), MANIFEST)).status == 200
            stats = c.stats
    finally:
        await env.stop()
    assert stats.config_lookups == 2
    # None refused: the new login went with the first request after it.
    assert (ts.counters.requests, ts.counters.unauthorized) == (2, 0)
    assert [r.username for r in ts.requests] == ["alice", "alice"]
    assert reg.counters.unauthorized == 1
    assert machine.helper_runs() == 0


async def test_an_unchanged_config_is_not_looked_up_again(env: Harness, machine: Machine) -> None:
    try:
        ts = await env.serve(TokenServer(users={"alice": "pw-1"}))
        reg = await env.serve(Registry(auth="bearer", token_server=ts))
        for i in range(5):
            reg.seed_image(f"team/app{i}", "v1")
        machine.helper_answers(reg.host, "alice", "pw-1")
        machine.write_config({"credHelpers": {reg.host: "expiring"}})
        params = StdTransportParams(config=machine.load(), config_check_interval=0)
        async with env.client(params) as c:
            for i in range(5):
                assert (await c.get(manifest(reg, f"team/app{i}"), MANIFEST)).status == 200
            stats = c.stats
    finally:
        await env.stop()
    assert (stats.config_lookups, machine.helper_runs()) == (1, 1)
