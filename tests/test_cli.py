"""The ``aociauth`` command line, driven as a user drives it: in a subprocess.

Each test starts an in-process token server and registry on loopback and runs
``python -m aociauth`` with ``DOCKER_CONFIG`` pointing at a temporary
``config.json`` that holds credentials for that registry. The servers count
what they were asked, so the tests check the round trips, not just the text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from aociauth.cli import main
from aociauth.testing.registry import Registry, SeededImage
from aociauth.testing.tokenserver import TokenServer

PASSWORD = "alice-cli-password"
HELPER_SECRET = "helper-cli-secret"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def errors(self) -> str:
        """stderr without the progress lines a slow step prints ("aociauth: waiting for ...")."""
        lines = self.err.splitlines(keepends=True)
        return "".join(line for line in lines if not line.startswith("aociauth: waiting for "))

    @property
    def waits(self) -> list[str]:
        """The progress lines on stderr."""
        return [line for line in self.err.splitlines() if line.startswith("aociauth: waiting for ")]

    def waited_for(self, what: str) -> bool:
        """Whether it said, once, that it was waiting for ``what``; and each wait only once."""
        said = [w for w in self.waits if w.startswith(f"aociauth: waiting for {what} (")]
        return len(said) == 1 and len(set(self.waits)) == len(self.waits)

    def assert_one_line_error(self) -> None:
        assert "Traceback" not in self.errors
        assert self.errors.strip().count("\n") == 0, self.err
        assert self.errors.startswith("aociauth: error: "), self.err


@dataclass
class Stack:
    ts: TokenServer
    registry: Registry
    image: SeededImage
    config_dir: Path
    env: dict[str, str]

    async def run(self, *args: str, env: Mapping[str, str] | None = None) -> Run:
        return await run_cli(*args, env=env if env is not None else self.env)


async def run_cli(*args: str, env: Mapping[str, str], stdin: bytes | None = None) -> Run:
    """Run ``python -m aociauth ARGS`` in ``env``, with ``stdin`` (or nothing) on its input."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aociauth",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        env=dict(env),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def _write_config(directory: Path, data: Mapping[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(data))


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _clean_env(tmp_path: Path, config_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "DOCKER_AUTH_CONFIG",
            "XDG_RUNTIME_DIR",
            "DOCKER_CONFIG",
            "REGISTRY_AUTH_FILE",
            "XDG_CONFIG_HOME",
        )
    }
    env["DOCKER_CONFIG"] = str(config_dir)
    env["HOME"] = str(tmp_path / "home")
    env["COLUMNS"] = "200"
    return env


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with (
        TokenServer(users={"alice": PASSWORD}) as ts,
        Registry(auth="bearer", token_server=ts) as registry,
    ):
        image = registry.seed_image("team/app", "v1")
        config_dir = tmp_path / "docker"
        _write_config(config_dir, {"auths": {registry.host: {"auth": _auth("alice", PASSWORD)}}})
        yield Stack(ts, registry, image, config_dir, _clean_env(tmp_path, config_dir))


# -- help, usage and exit codes -------------------------------------------------------


async def test_help_exits_0_and_documents_the_exit_codes(stack: Stack) -> None:
    top = await stack.run("--help")
    assert top.code == 0
    for command in ("demo", "get", "token", "fetch", "login", "logout"):
        assert command in top.out
    assert "exit codes" in top.out


@pytest.mark.parametrize("command", ["demo", "get", "token", "fetch", "login", "logout"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert f"usage: aociauth {command}" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["frobnicate"], ["demo", "--repos", "many"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    assert main(["fetch", "127.0.0.1:5000/Team/App:v1"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("aociauth: error: invalid reference")


async def test_the_console_script_runs_the_same_main() -> None:
    # The `aociauth` script is what `pip install` puts on PATH.
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("aociauth") == "aociauth.cli:main"


# -- get ------------------------------------------------------------------------------


async def test_get_says_where_credentials_come_from_and_masks_them(stack: Stack) -> None:
    run = await stack.run("get", stack.registry.host)
    assert run.code == 0, run.err
    assert PASSWORD not in run.out + run.err
    lines = dict(line.split(":", 1) for line in run.out.splitlines())
    assert lines["found"].strip() == "auths entry"
    assert lines["source"].strip() == str(stack.config_dir / "config.json")
    assert lines["key"].strip() == stack.registry.host
    assert lines["username"].strip() == "alice"
    assert lines["password"].strip() == "<set>"
    assert lines["refresh token"].strip() == "<empty>"


async def test_get_shows_secrets_only_when_asked(stack: Stack) -> None:
    run = await stack.run("get", stack.registry.host, "--show-secrets", "--json")
    assert run.code == 0, run.err
    data = run.json()
    assert data["password"] == PASSWORD
    assert data["kind"] == "auths"
    masked = (await stack.run("get", stack.registry.host, "--json")).json()
    assert masked["password"] == "<set>"


async def test_get_per_namespace_key_wins_for_its_repositories(stack: Stack) -> None:
    host = stack.registry.host
    _write_config(
        stack.config_dir,
        {
            "auths": {
                host: {"auth": _auth("alice", PASSWORD)},
                f"{host}/team": {"auth": _auth("teambot", "team-secret")},
            }
        },
    )
    inside = (await stack.run("get", host, "--repository", "team/app", "--json")).json()
    assert (inside["username"], inside["key"]) == ("teambot", f"{host}/team")
    outside = (await stack.run("get", host, "--repository", "other/app", "--json")).json()
    assert (outside["username"], outside["key"]) == ("alice", host)


async def test_get_reports_a_credential_helper(stack: Stack, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-clitest"
    helper.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "url = sys.stdin.read()\n"
        f"answer = {{'ServerURL': url, 'Username': 'carol', 'Secret': {HELPER_SECRET!r}}}\n"
        "print(json.dumps(answer))\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    _write_config(stack.config_dir, {"credHelpers": {stack.registry.host: "clitest"}})
    env = dict(stack.env, PATH=f"{bin_dir}{os.pathsep}{stack.env.get('PATH', '')}")
    run = await stack.run("get", stack.registry.host, env=env)
    assert run.code == 0, run.err
    assert "credential helper (credHelpers)" in run.out
    assert "docker-credential-clitest" in run.out
    assert "carol" in run.out
    assert HELPER_SECRET not in run.out + run.err
    shown = await stack.run("get", stack.registry.host, "--show-secrets", env=env)
    assert HELPER_SECRET in shown.out


async def test_get_for_an_unknown_registry_finds_nothing(stack: Stack) -> None:
    data = (await stack.run("get", "registry.invalid", "--json")).json()
    assert data["kind"] == "none"
    assert data["username"] == ""


async def test_get_without_a_registry_lists_every_credential_in_lookup_order(
    stack: Stack, tmp_path: Path
) -> None:
    """A temporary home with a podman file, docker's file and DOCKER_AUTH_CONFIG: the
    listing is in the README table's order, masked, and says what shadows what."""
    host = stack.registry.host
    podman = tmp_path / "home" / ".config" / "containers"
    podman.mkdir(parents=True)
    (podman / "auth.json").write_text(
        json.dumps({"auths": {"quay.io": {"auth": _auth("pod", "pod-secret")}}})
    )
    _write_config(
        stack.config_dir,
        {
            "auths": {
                host: {"auth": _auth("alice", PASSWORD)},
                "quay.io/team": {"auth": _auth("teambot", "team-secret")},
                "broken.test": {"auth": " !! "},
            }
        },
    )
    inline = json.dumps({"auths": {"ci.test": {"registrytoken": "ci-access-token"}}})
    env = dict(stack.env, DOCKER_AUTH_CONFIG=inline)
    run = await stack.run("get", "--json", env=env)
    assert run.code == 0, run.err
    data = run.json()
    config_json = str(stack.config_dir / "config.json")
    assert data["sources_read"] == ["DOCKER_AUTH_CONFIG", str(podman / "auth.json"), config_json]
    rows = [
        (c["registry"], c["namespace"], c["source"], c["key"], c["username"], c["used"])
        for c in data["credentials"]
    ]
    assert rows == [
        ("ci.test", "", "DOCKER_AUTH_CONFIG", "ci.test", "", True),
        ("quay.io", "", str(podman / "auth.json"), "quay.io", "pod", True),
        # An earlier source's registry key answers for every repository of quay.io.
        ("quay.io", "team", config_json, "quay.io/team", "teambot", False),
        # Then the file's registry keys, by name.
        (host, "", config_json, host, "alice", True),
        ("broken.test", "", config_json, "broken.test", "", False),
    ]
    by_key = {c["key"]: c for c in data["credentials"]}
    assert by_key["ci.test"]["access_token"] == "<set>"
    assert by_key["quay.io/team"]["used_instead"]["source"] == str(podman / "auth.json")
    assert "invalid base64" in by_key["broken.test"]["problem"]
    for secret in (PASSWORD, "pod-secret", "team-secret", "ci-access-token"):
        assert secret not in run.out + run.err
    text = await stack.run("get", env=env)
    assert text.code == 0, text.err
    lines = text.out.splitlines()
    assert lines[0].split() == ["REGISTRY", "SOURCE", "WHERE", "USERNAME", "SECRETS", "STATUS"]
    assert [line.split()[0] for line in lines[1:6]] == [
        "ci.test",
        "quay.io",
        "quay.io/team",
        host,
        "broken.test",
    ]
    assert "shadowed by" in lines[3]
    assert "unusable:" in lines[5]
    assert lines[-1].startswith("sources read: DOCKER_AUTH_CONFIG, ")
    assert PASSWORD not in text.out
    shown = (await stack.run("get", "--json", "--show-secrets", env=env)).json()
    assert {c["key"]: c["password"] for c in shown["credentials"]}[host] == PASSWORD


async def test_get_without_a_registry_lists_a_helpers_answer(stack: Stack, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-clitest"
    helper.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "url = sys.stdin.read()\n"
        "answer = {'Username': 'carol', 'Secret': 'x'} if url == 'helped.test' else {}\n"
        "print(json.dumps(answer))\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    _write_config(
        stack.config_dir, {"credHelpers": {"helped.test": "clitest", "empty.test": "clitest"}}
    )
    env = dict(stack.env, PATH=f"{bin_dir}{os.pathsep}{stack.env.get('PATH', '')}")
    data = (await stack.run("get", "--json", env=env)).json()
    # empty.test: the helper answers {}, no credentials, so it is not listed.
    assert [
        (c["registry"], c["kind"], c["helper"], c["username"]) for c in data["credentials"]
    ] == [("helped.test", "credHelpers", "clitest", "carol")]


async def test_get_without_a_registry_escapes_what_a_terminal_would_act_on(stack: Stack) -> None:
    _write_config(stack.config_dir, {"auths": {"evil\x1b[2J.test": {"username": "u\u202eu"}}})
    run = await stack.run("get")
    assert run.code == 0, run.err
    assert "\x1b" not in run.out
    assert "\u202e" not in run.out
    assert "evil\\x1b[2J.test" in run.out


async def test_get_without_a_registry_and_nothing_configured(stack: Stack) -> None:
    (stack.config_dir / "config.json").unlink()
    run = await stack.run("get")
    assert run.code == 0, run.err
    assert "no credentials found" in run.out
    assert (await stack.run("get", "--json")).json()["credentials"] == []
    usage = await stack.run("get", "--repository", "team/app")
    assert usage.code == 2


async def test_invalid_config_is_exit_3_in_one_line_and_debug_shows_the_traceback(
    stack: Stack,
) -> None:
    (stack.config_dir / "config.json").write_text('{"auths": {')
    run = await stack.run("get", stack.registry.host)
    assert run.code == 3
    run.assert_one_line_error()
    assert "config.json" in run.err
    debug = await stack.run("get", stack.registry.host, "--debug")
    assert debug.code == 3
    assert "Traceback" in debug.err


async def test_a_failing_helper_is_a_config_error(stack: Stack) -> None:
    _write_config(stack.config_dir, {"credHelpers": {stack.registry.host: "not-installed-xyz"}})
    run = await stack.run("get", stack.registry.host)
    assert run.code == 3
    run.assert_one_line_error()
    assert "not-installed-xyz" in run.err


# -- token ------------------------------------------------------------------------------


async def test_token_runs_the_flow_and_describes_the_token(stack: Stack) -> None:
    repo = f"{stack.registry.host}/team/app"
    run = await stack.run("token", repo, "--json")
    assert run.code == 0, run.err
    data = run.json()
    assert data["token"] == "<set>"
    assert data["scope_cached"] == "repository:team/app:pull"
    assert data["scope_granted"] == "repository:team/app:pull"
    assert data["grant"] == ["get_basic"]
    # The token server's expires_in (300 s), as the middleware keeps it.
    assert 290 <= data["expires_in"] <= 300
    assert data["tags_status"] == 200
    # One challenge, one token request: the one the token server saw.
    assert data["responses_401"] == 1
    assert data["token_requests"] == stack.ts.counters.requests == 1
    assert stack.ts.counters.get_basic == 1
    assert PASSWORD not in run.out + run.err


async def test_token_push_and_extra_scope(stack: Stack) -> None:
    repo = f"{stack.registry.host}/team/app"
    run = await stack.run("token", repo, "--push", "--scope", "registry:catalog:*")
    assert run.code == 0, run.err
    lines = dict(line.split(":", 1) for line in run.out.splitlines())
    assert lines["scope granted"].strip() == "registry:catalog:* repository:team/app:pull,push"
    assert lines["grant"].strip() == "GET with Basic credentials"
    assert "<set>" in lines["token"]
    issued = stack.ts.requests[-1]
    assert set(issued.scopes) == {"repository:team/app:pull,push", "registry:catalog:*"}


async def test_token_is_printed_only_with_show_token(stack: Stack) -> None:
    repo = f"{stack.registry.host}/team/app"
    run = await stack.run("token", repo, "--show-token", "--json")
    assert run.code == 0, run.err
    token = run.json()["token"]
    claims = stack.ts.issuer.verify(token)
    assert claims["sub"] == "alice"
    hidden = await stack.run("token", repo)
    assert token not in hidden.out
    assert "--show-token" in hidden.out


async def test_token_for_a_repository_that_does_not_exist_is_exit_1(stack: Stack) -> None:
    run = await stack.run("token", f"{stack.registry.host}/team/nope", "--json")
    assert run.code == 1, run.err
    run.assert_one_line_error()
    assert "tags/list: 404" in run.errors
    assert "NAME_UNKNOWN" in run.errors
    # The description still comes first, saying what failed.
    data = run.json()
    assert data["tags_status"] == 404
    assert data["ok"] is False
    assert len(data["problems"]) == 1
    assert stack.ts.counters.requests == 1


async def test_token_push_granted_only_pull_is_exit_1(stack: Stack) -> None:
    stack.ts.grants = {"alice": {"repository:team/*": {"pull"}}}
    run = await stack.run("token", f"{stack.registry.host}/team/app", "--push")
    assert run.code == 1, run.err
    run.assert_one_line_error()
    assert (
        "the token server granted repository:team/app:pull, not repository:team/app:push"
        in run.errors
    )
    lines = dict(line.split(":", 1) for line in run.out.splitlines())
    assert lines["scope granted"].strip() == "repository:team/app:pull"
    assert lines["tags/list"].strip() == "200"
    # The token server was asked for push, and answered with less.
    assert stack.ts.requests[-1].scopes == ("repository:team/app:pull,push",)


async def test_token_granting_all_it_was_asked_is_ok_in_json(stack: Stack) -> None:
    run = await stack.run("token", f"{stack.registry.host}/team/app", "--push", "--json")
    assert run.code == 0, run.err
    assert (run.json()["ok"], run.json()["problems"]) == (True, [])


async def test_token_from_the_configuration_needs_no_token_request(stack: Stack) -> None:
    access = [{"type": "repository", "name": "team/app", "actions": ["pull"]}]
    registry_token = stack.ts.issuer.issue(subject="ci", access=access, expires_in=600)
    _write_config(
        stack.config_dir, {"auths": {stack.registry.host: {"registrytoken": registry_token}}}
    )
    run = await stack.run("token", f"{stack.registry.host}/team/app")
    assert run.code == 0, run.err
    lines = dict(line.split(":", 1) for line in run.out.splitlines())
    assert lines["grant"].strip() == "none: an access token from the configuration (registrytoken)"
    assert lines["expires in"].strip() == "never"
    assert lines["scope cached"].strip() == "*"
    assert lines["tags/list"].strip() == "200"
    assert stack.ts.counters.requests == 0
    assert registry_token not in run.out


async def test_token_with_a_wrong_password_is_exit_1(stack: Stack) -> None:
    _write_config(
        stack.config_dir, {"auths": {stack.registry.host: {"auth": _auth("alice", "wrong")}}}
    )
    run = await stack.run("token", f"{stack.registry.host}/team/app")
    assert run.code == 1
    run.assert_one_line_error()
    assert "401" in run.err
    assert stack.ts.counters.unauthorized >= 1


async def test_token_with_an_unreachable_token_server_is_exit_4(tmp_path: Path) -> None:
    async with (
        TokenServer(users={"alice": PASSWORD}) as ts,
        # The challenge names a realm where nothing listens (port 9, discard).
        Registry(auth="bearer", token_server=ts, realm="http://127.0.0.1:9/token") as registry,
    ):
        config_dir = tmp_path / "docker"
        _write_config(config_dir, {"auths": {registry.host: {"auth": _auth("alice", PASSWORD)}}})
        env = _clean_env(tmp_path, config_dir)
        stack = Stack(ts, registry, None, config_dir, env)  # type: ignore[arg-type]
        run = await stack.run("token", f"{registry.host}/team/app")
        assert run.code == 4, run.err
        run.assert_one_line_error()
        assert "could not be reached" in run.err
        assert ts.counters.requests == 0


async def test_token_against_a_basic_registry_says_there_is_none(tmp_path: Path) -> None:
    async with Registry(auth="basic", users={"alice": PASSWORD}) as registry:
        config_dir = tmp_path / "docker"
        _write_config(config_dir, {"auths": {registry.host: {"auth": _auth("alice", PASSWORD)}}})
        env = _clean_env(tmp_path, config_dir)
        stack = Stack(None, registry, None, config_dir, env)  # type: ignore[arg-type]
        run = await stack.run("token", f"{registry.host}/team/app")
        assert run.code == 1
        run.assert_one_line_error()
        assert "Basic credentials" in run.err
        assert registry.counters.basic >= 1


# -- fetch ------------------------------------------------------------------------------


async def test_fetch_prints_the_manifest(stack: Stack) -> None:
    run = await stack.run("fetch", f"{stack.registry.host}/team/app:v1")
    assert run.code == 0, run.err
    manifest = run.json()
    assert manifest == json.loads(stack.image.manifest)
    assert stack.registry.counters.unauthorized == 1
    assert stack.ts.counters.get_basic == 1


async def test_fetch_by_digest_raw_is_byte_exact(stack: Stack) -> None:
    ref = f"{stack.registry.host}/team/app@{stack.image.manifest_digest}"
    run = await stack.run("fetch", ref, "--raw")
    assert run.code == 0, run.err
    assert run.out.encode() == stack.image.manifest


async def test_fetch_headers(stack: Stack) -> None:
    run = await stack.run("fetch", f"{stack.registry.host}/team/app:v1", "--headers")
    assert run.code == 0, run.err
    assert run.out.startswith("HTTP/1.1 200")
    assert f"Docker-Content-Digest: {stack.image.manifest_digest}" in run.out
    assert "application/vnd.oci.image.manifest.v1+json" in run.out


async def test_fetch_a_url(stack: Stack) -> None:
    url = f"{stack.registry.url}/v2/team/app/manifests/v1"
    run = await stack.run("fetch", url)
    assert run.code == 0, run.err
    assert run.json()["schemaVersion"] == 2


async def test_fetch_of_a_missing_tag_is_exit_1_with_the_registry_error(stack: Stack) -> None:
    run = await stack.run("fetch", f"{stack.registry.host}/team/app:nope")
    assert run.code == 1
    run.assert_one_line_error()
    assert "404" in run.err
    assert "MANIFEST_UNKNOWN" in run.err


async def test_fetch_of_an_unreachable_registry_is_exit_4(stack: Stack) -> None:
    # Port 9 (discard) on loopback: nothing listens there.
    run = await stack.run("fetch", "127.0.0.1:9/team/app:v1")
    assert run.code == 4
    run.assert_one_line_error()


# -- demo -------------------------------------------------------------------------------


async def test_demo_json_compare_figures_match_the_counters(stack: Stack) -> None:
    run = await stack.run(
        "demo", "--json", "--repos", "20", "--concurrency", "8", "--latency-ms", "1", "--compare"
    )
    assert run.code == 0, run.err
    data = run.json()
    ours, original = data["runs"]["aociauth"], data["runs"]["original"]
    for figures in (ours, original):
        assert figures["images"] == 20
        assert figures["failed"] == 0
        # A manifest and a config blob per image, through the middleware.
        assert figures["requests"] == 40
        # What the middleware counted is what the servers saw.
        assert figures["token_requests"] == figures["token_server_requests"]
        assert figures["registry_requests"] == figures["requests"] + figures["responses_401"]
        assert figures["stats"]["responses_401"] == figures["responses_401"]
    # aociauth: the first contact is the only 401; every other token comes before its
    # request, and misses that meet share token requests: each repository's scope is
    # asked exactly once, most in another's request (8 pulls at a time: at least 3).
    assert ours["responses_401"] == 1
    assert 3 <= ours["token_requests"] < 20
    assert ours["token_requests"] + ours["stats"]["coalesced_scopes"] == 20
    assert original["stats"]["coalesced_scopes"] == 0
    assert ours["cache_hits"] == 20
    # The original: at least a 401 for every repository (more when, with no required
    # scope, it attaches another repository's cached token), each answered by a token fetch.
    assert original["responses_401"] >= 20
    assert 20 <= original["token_requests"] <= original["responses_401"]
    assert original["stats"]["fetches_ahead"] == 0


async def test_demo_prints_the_table(stack: Stack) -> None:
    run = await stack.run("demo", "--repos", "5", "--latency-ms", "0")
    assert run.code == 0, run.err
    for row in ("401 responses", "token requests", "cache hits", "wall time", "p99 latency"):
        assert row in run.out
    assert "Run with --compare" in run.out


async def test_demo_rejects_nonsense_options(stack: Stack) -> None:
    run = await stack.run("demo", "--repos", "0")
    assert run.code == 2
    run.assert_one_line_error()


def test_the_plain_table_shows_each_policy_as_measured() -> None:
    # The table printed when rich is not installed (the `test` extra does not bring it).
    import io

    from aociauth.demo import DemoOptions, DemoResult, PullFigures, render_plain

    def figures(policy: str, r401: int, wall: float) -> PullFigures:
        return PullFigures(policy, 7, 0, 14, 14 + r401, r401, 7, 7, 7, wall, 12.5, 40.0)

    result = DemoResult(
        DemoOptions(repos=7, compare=True),
        "http://127.0.0.1:1",
        "http://127.0.0.1:2/token",
        (figures("aociauth", 1, 0.5), figures("original", 7, 2.0)),
    )
    out = io.StringIO()
    render_plain(result, out)
    rows = {line.split("  ")[0].strip(): line.split() for line in out.getvalue().splitlines()}
    assert rows["401 responses"][-2:] == ["1", "7"]
    # Sent and resent apart: a bare 401 requests would read like a status code.
    registry_row = " ".join(rows["requests the registry got"])
    assert registry_row.endswith("14 + 1 resent 14 + 7 resent")
    heads = out.getvalue().splitlines()[2]
    assert heads.split("  ")[-2:] == ["aociauth", "aociauth with the Go original's policy"]
    assert (
        "The registry answered 401 once with aociauth's defaults and 7 times with the "
        "original's policy; it got 6 fewer requests, and the pull was 4.0 times as fast "
        "(0.50 s against 2.00 s)."
    ) in " ".join(out.getvalue().split())


def test_the_plain_summary_of_one_policy_counts_in_words() -> None:
    import io

    from aociauth.demo import DemoOptions, DemoResult, PullFigures, render_plain

    one = PullFigures("aociauth", 5, 0, 10, 11, 1, 5, 5, 5, 0.5, 12.5, 40.0)
    out = io.StringIO()
    render_plain(DemoResult(DemoOptions(repos=5), "http://a", "http://b", (one,)), out)
    text = " ".join(out.getvalue().split())
    assert "The registry answered 401 once and the token server was asked 5 times" in text
    assert "aociauth run with the Go original's policy" in text


# -- timeouts: a frozen server ends the command, saying what it waited for ---------------


@dataclass
class Frozen:
    """A loopback server that takes connections and requests and never answers."""

    port: int = 0
    connections: int = 0
    request_lines: list[str] = field(default_factory=list)


@pytest_asyncio.fixture
async def frozen() -> AsyncIterator[Frozen]:
    state = Frozen()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            head = await reader.readuntil(b"\r\n")
            state.request_lines.append(head.decode().strip())
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def timed(run: Awaitable[Run]) -> tuple[Run, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await run
    return result, loop.time() - started


# The bound is loose: a Python start and a loaded machine take seconds too. Without
# --timeout these commands waited 300 s (aiohttp) and 90 s (three token attempts).
SLACK = 20.0


async def test_fetch_from_a_frozen_registry_ends_at_the_timeout_naming_the_request(
    frozen: Frozen, tmp_path: Path
) -> None:
    env = _clean_env(tmp_path, tmp_path / "docker")
    run, took = await timed(
        run_cli("fetch", f"127.0.0.1:{frozen.port}/team/app:v1", "--timeout", "5", env=env)
    )
    assert run.code == 4, run.err
    run.assert_one_line_error()
    what = f"registry 127.0.0.1:{frozen.port} to answer GET /v2/team/app/manifests/v1"
    assert f"timed out after 5 s waiting for {what}" in run.errors
    # After a couple of seconds it said what it was waiting for, once.
    assert run.waited_for(what)
    assert frozen.request_lines == ["GET /v2/team/app/manifests/v1 HTTP/1.1"]
    assert took < 5 + SLACK


async def test_token_with_a_frozen_token_server_ends_at_the_timeout_naming_it(
    frozen: Frozen, tmp_path: Path
) -> None:
    realm = f"http://127.0.0.1:{frozen.port}/token"
    async with (
        TokenServer(users={"alice": PASSWORD}) as ts,
        Registry(auth="bearer", token_server=ts, realm=realm) as registry,
    ):
        config_dir = tmp_path / "docker"
        _write_config(config_dir, {"auths": {registry.host: {"auth": _auth("alice", PASSWORD)}}})
        env = _clean_env(tmp_path, config_dir)
        host = registry.host
        run, took = await timed(run_cli("token", f"{host}/team/app", "--timeout", "5", env=env))
    assert run.code == 4, run.err
    run.assert_one_line_error()
    what = f"token server {realm} for registry {host}"
    assert f"timed out after 5 s waiting for {what}" in run.errors
    assert run.waited_for(what)
    # One token request reached it, and the registry met only the first contact.
    assert frozen.connections == 1
    assert frozen.request_lines[0].startswith("GET /token?")
    assert registry.counters.unauthorized == 1
    assert took < 5 + SLACK


async def test_a_frozen_credential_helper_is_named_and_stopped_at_the_timeout(
    stack: Stack, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pid_file = tmp_path / "helper.pid"
    helper = bin_dir / "docker-credential-frozen"
    helper.write_text(
        f"#!{sys.executable}\n"
        "import os, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(600)\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    _write_config(stack.config_dir, {"credHelpers": {stack.registry.host: "frozen"}})
    env = dict(stack.env, PATH=f"{bin_dir}{os.pathsep}{stack.env.get('PATH', '')}")
    run, took = await timed(
        stack.run("fetch", f"{stack.registry.host}/team/app:v1", "--timeout", "5", env=env)
    )
    assert run.code == 4, run.err
    run.assert_one_line_error()
    assert f"waiting for credentials for registry {stack.registry.host}" in run.errors
    assert run.waited_for(f"credentials for registry {stack.registry.host}")
    assert took < 5 + SLACK
    # The helper's process did not outlive the command.
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_timeout_takes_positive_seconds(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["fetch", "127.0.0.1:5000/team/app:v1", "--timeout", value])
    assert exited.value.code == 2
    assert "--timeout" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["token", "fetch", "login"])
def test_commands_that_talk_to_a_registry_document_their_timeout(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--timeout SECONDS" in capsys.readouterr().out
