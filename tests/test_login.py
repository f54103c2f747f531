"""``aociauth login`` and ``logout``, driven as a user drives them: in a subprocess.

Credentials are checked against in-process registries on loopback (the servers
count what they were asked), then stored in a real config file in a temporary
directory, or through a credential helper: a script that records what it was
given, and the real ``docker-credential-pass`` in a throw-away GnuPG home.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pty
import select
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from test_cli import Frozen, Run, frozen, run_cli  # noqa: F401  (the frozen fixture)

from aociauth import ConfigEntry, load_with_env
from aociauth.config import DOCKER_HUB_SERVER_URL
from aociauth.login import (
    CredentialStore,
    credential_store,
    login_target,
    remove_credentials,
    save_credentials,
)
from aociauth.testing.passstore import PassStore
from aociauth.testing.registry import Registry
from aociauth.testing.tokenserver import TokenServer

PASSWORD = "login-password-123"


@dataclass
class Home:
    """A user's environment: a Docker config directory, and the env the CLI runs with."""

    config_dir: Path
    env: dict[str, str]

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.json"

    def write(self, data: Mapping[str, Any]) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(data))

    def read(self) -> Any:
        return json.loads(self.config_file.read_text())

    async def run(self, *args: str, stdin: bytes | None = None) -> Run:
        return await run_cli(*args, env=self.env, stdin=stdin)

    async def login(self, host: str, password: str = PASSWORD, *extra: str) -> Run:
        return await self.run(
            "login",
            host,
            "-u",
            "alice",
            "--password-stdin",
            *extra,
            stdin=password.encode() + b"\n",
        )


@pytest.fixture
def home(tmp_path: Path) -> Home:
    config_dir = tmp_path / "docker"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DOCKER_AUTH_CONFIG", "XDG_RUNTIME_DIR", "DOCKER_CONFIG")
    }
    env.update(DOCKER_CONFIG=str(config_dir), HOME=str(tmp_path / "home"))
    return Home(config_dir, env)


@pytest_asyncio.fixture
async def bearer() -> AsyncIterator[Registry]:
    async with (
        TokenServer(users={"alice": PASSWORD}) as ts,
        Registry(auth="bearer", token_server=ts) as registry,
    ):
        yield registry


def basic_auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def leftovers(directory: Path) -> list[str]:
    """Files other than config.json: a temporary file left by an interrupted write."""
    return sorted(p.name for p in directory.iterdir() if p.name != "config.json")


# -- login to the file ------------------------------------------------------------------


async def test_login_checks_then_stores_in_dockers_format_keeping_the_rest(
    bearer: Registry, home: Home
) -> None:
    home.write(
        {
            "auths": {"other.example": {"auth": basic_auth("bob", "bob-pw")}},
            "credHelpers": {"gcr.io": "gcloud"},
            "psFormat": "table {{.ID}}",
            "proxies": {"default": {"httpProxy": "http://proxy.invalid:3128"}},
        }
    )
    run = await home.login(bearer.host)
    assert run.code == 0, run.err
    assert f"Login Succeeded: alice at {bearer.host}" in run.out
    assert PASSWORD not in run.out + run.err
    # Checked with the token server before anything was stored.
    ts = bearer.token_server
    assert ts is not None
    assert ts.counters.get_basic == 1
    assert [r.username for r in ts.requests] == ["alice"]
    data = home.read()
    assert data["auths"][bearer.host] == {"auth": basic_auth("alice", PASSWORD)}
    assert data["auths"]["other.example"] == {"auth": basic_auth("bob", "bob-pw")}
    assert data["credHelpers"] == {"gcr.io": "gcloud"}
    assert data["psFormat"] == "table {{.ID}}"
    assert data["proxies"] == {"default": {"httpProxy": "http://proxy.invalid:3128"}}
    assert stat.S_IMODE(home.config_file.stat().st_mode) == 0o600
    assert leftovers(home.config_dir) == []
    # What it wrote is what the lookups (docker's rules) find.
    config = load_with_env(env=home.env)
    assert await config.entry_for_registry(bearer.host) == ConfigEntry(
        username="alice", password=PASSWORD
    )


async def test_login_then_token_uses_the_stored_credentials(bearer: Registry, home: Home) -> None:
    assert (await home.login(bearer.host)).code == 0
    bearer.seed_image("team/app", "v1")
    run = await home.run("token", f"{bearer.host}/team/app")
    assert run.code == 0, run.err


async def test_login_creates_the_directory_and_a_private_file(bearer: Registry, home: Home) -> None:
    assert not home.config_dir.exists()
    run = await home.login(bearer.host)
    assert run.code == 0, run.err
    assert stat.S_IMODE(home.config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.config_dir.stat().st_mode) == 0o700
    assert home.read() == {"auths": {bearer.host: {"auth": basic_auth("alice", PASSWORD)}}}


async def test_login_replaces_the_whole_entry(bearer: Registry, home: Home) -> None:
    # An old identity token would win over the new password in every reader.
    home.write({"auths": {bearer.host: {"identitytoken": "old-refresh", "email": "a@b.c"}}})
    assert (await home.login(bearer.host)).code == 0
    assert home.read()["auths"][bearer.host] == {"auth": basic_auth("alice", PASSWORD)}


async def test_login_without_docker_config_writes_under_home(bearer: Registry, home: Home) -> None:
    env = {k: v for k, v in home.env.items() if k != "DOCKER_CONFIG"}
    run = await run_cli(
        "login", bearer.host, "-u", "alice", "--password-stdin", env=env, stdin=PASSWORD.encode()
    )
    assert run.code == 0, run.err
    written = Path(env["HOME"]) / ".docker" / "config.json"
    assert json.loads(written.read_text())["auths"][bearer.host]["auth"] == basic_auth(
        "alice", PASSWORD
    )


async def test_login_follows_a_symlinked_config(
    bearer: Registry, home: Home, tmp_path: Path
) -> None:
    real = tmp_path / "dotfiles" / "docker.json"
    real.parent.mkdir()
    real.write_text(json.dumps({"auths": {}, "detachKeys": "ctrl-x"}))
    home.config_dir.mkdir()
    home.config_file.symlink_to(real)
    assert (await home.login(bearer.host)).code == 0
    assert home.config_file.is_symlink()
    data = json.loads(real.read_text())
    assert data["detachKeys"] == "ctrl-x"
    assert bearer.host in data["auths"]


# -- refused, or not checked ---------------------------------------------------------------


async def test_a_wrong_password_is_exit_1_and_stores_nothing(bearer: Registry, home: Home) -> None:
    home.write({"auths": {"other.example": {"auth": basic_auth("bob", "x")}}})
    before = home.config_file.read_bytes()
    run = await home.login(bearer.host, "wrong-password")
    assert run.code == 1, run.err
    run.assert_one_line_error()
    assert "refused the credentials of 'alice'" in run.err
    assert "nothing was stored" in run.err
    assert "wrong-password" not in run.out + run.err
    assert home.config_file.read_bytes() == before
    assert bearer.token_server is not None
    assert bearer.token_server.counters.unauthorized == 1


async def test_a_token_the_registry_refuses_is_a_refusal(home: Home) -> None:
    # The challenge names a token server that accepts alice, but the registry verifies
    # tokens with another one's key: a 401 after authentication.
    async with (
        TokenServer(users={"alice": PASSWORD}, check_service=False) as ts,
        TokenServer() as trusted,
        Registry(auth="bearer", token_server=trusted, realm=ts.realm) as registry,
    ):
        run = await home.login(registry.host)
        assert ts.counters.get_basic == 1
        assert registry.counters.unauthorized == 2
    assert run.code == 1, run.err
    run.assert_one_line_error()
    # The middleware's rewrite of a 401 to a fresh token, as in the original.
    assert "GET /v2/ answered 403" in run.err
    assert not home.config_file.exists()


async def test_login_to_a_basic_registry(home: Home) -> None:
    async with Registry(auth="basic", users={"alice": PASSWORD}) as registry:
        host = registry.host
        good = await home.login(host)
        assert good.code == 0, good.err
        assert registry.counters.basic >= 1
        bad = await home.login(host, "nope")
    assert bad.code == 1
    assert "GET /v2/ answered 401" in bad.err
    assert home.read()["auths"][host] == {"auth": basic_auth("alice", PASSWORD)}


async def test_login_to_an_open_registry_says_nothing_was_checked(home: Home) -> None:
    async with Registry() as registry:
        host = registry.host
        run = await home.login(host)
    assert run.code == 0, run.err
    assert f"{host} asked for no credentials, so they were not checked" in run.err
    assert host in home.read()["auths"]


async def test_login_to_a_frozen_registry_times_out_and_stores_nothing(
    frozen: Frozen,  # noqa: F811  (the fixture imported above)
    home: Home,
) -> None:
    run = await home.login(f"127.0.0.1:{frozen.port}", PASSWORD, "--timeout", "2")
    assert run.code == 4, run.err
    run.assert_one_line_error()
    assert f"waiting for registry 127.0.0.1:{frozen.port} to answer GET /v2/" in run.err
    assert frozen.request_lines == ["GET /v2/ HTTP/1.1"]
    assert not home.config_file.exists()


async def test_an_invalid_config_is_exit_3_and_left_alone(bearer: Registry, home: Home) -> None:
    home.config_dir.mkdir()
    home.config_file.write_text('{"auths": ')
    run = await home.login(bearer.host)
    assert run.code == 3
    run.assert_one_line_error()
    assert home.config_file.read_text() == '{"auths": '
    # Found before the registry was asked anything.
    assert bearer.counters.requests == 0


# -- the password: never an argument --------------------------------------------------------


async def test_password_stdin_needs_a_username(home: Home) -> None:
    run = await home.run("login", "127.0.0.1:9", "--password-stdin", stdin=b"pw\n")
    assert run.code == 2
    assert "--password-stdin needs --username" in run.err


async def test_without_a_terminal_the_password_must_come_on_stdin(home: Home) -> None:
    run = await home.run("login", "127.0.0.1:9", "-u", "alice")
    assert run.code == 2
    assert "--password-stdin" in run.err


async def test_there_is_no_password_option(home: Home) -> None:
    run = await home.run("login", "127.0.0.1:9", "-u", "alice", "--password", "pw")
    assert run.code == 2
    assert "unrecognized arguments" in run.err


async def test_only_one_trailing_newline_is_dropped(bearer: Registry, home: Home) -> None:
    # A password may end in spaces; only what echo or a here-string adds is dropped.
    ts = bearer.token_server
    assert ts is not None
    ts.users["alice"] = "ends with a space "
    run = await home.run(
        "login", bearer.host, "-u", "alice", "--password-stdin", stdin=b"ends with a space \r\n"
    )
    assert run.code == 0, run.err
    assert home.read()["auths"][bearer.host] == {"auth": basic_auth("alice", "ends with a space ")}


def _converse(argv: list[str], env: Mapping[str, str], answers: list[tuple[bytes, bytes]]) -> Run:
    """Run the CLI on a pseudo-terminal, answering each prompt; return its exit and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aociauth", *argv],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=dict(env),
        start_new_session=True,
    )
    os.close(slave)
    output = b""
    try:
        pending = list(answers)
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                raise TimeoutError(f"no output; so far: {output!r}")
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            output += chunk
            if pending and pending[0][0] in output:
                os.write(master, pending.pop(0)[1])
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return Run(code, output.decode(errors="replace"), "")


async def test_prompts_for_username_and_password_on_a_terminal(
    bearer: Registry, home: Home
) -> None:
    answers = [(b"Username: ", b"alice\n"), (b"Password: ", PASSWORD.encode() + b"\n")]
    run = await asyncio.to_thread(_converse, ["login", bearer.host], home.env, answers)
    assert run.code == 0, run.out
    assert "Login Succeeded: alice" in run.out
    # getpass turned echo off: the terminal never showed the password.
    assert PASSWORD not in run.out
    assert home.read()["auths"][bearer.host] == {"auth": basic_auth("alice", PASSWORD)}


# -- logout -------------------------------------------------------------------------------


async def test_logout_removes_the_entry_and_keeps_the_rest(home: Home) -> None:
    home.write(
        {
            "auths": {
                "registry.example": {"auth": basic_auth("alice", "x")},
                "https://registry.example/v1/": {"auth": basic_auth("alice", "y")},
                "registry.example/team": {"auth": basic_auth("team", "z")},
                "other.example": {"auth": basic_auth("bob", "w")},
            },
            "psFormat": "table",
        }
    )
    run = await home.run("logout", "registry.example")
    assert run.code == 0, run.err
    assert f"Removed the credentials for registry.example from {home.config_file}" in run.out
    data = home.read()
    # The namespace key is another credential: it stays.
    assert set(data["auths"]) == {"registry.example/team", "other.example"}
    assert data["psFormat"] == "table"
    assert stat.S_IMODE(home.config_file.stat().st_mode) == 0o600
    again = await home.run("logout", "registry.example")
    assert again.code == 0
    assert "Not logged in to registry.example" in again.out


async def test_logout_without_a_config_is_not_logged_in(home: Home) -> None:
    run = await home.run("logout", "registry.example")
    assert run.code == 0, run.err
    assert "Not logged in to registry.example" in run.out
    assert not home.config_file.exists()


# -- Docker Hub's key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["docker.io", "index.docker.io", "registry-1.docker.io", DOCKER_HUB_SERVER_URL]
)
def test_docker_hubs_names_give_docker_logins_key(name: str) -> None:
    target = login_target(name)
    assert (target.key, target.host) == (DOCKER_HUB_SERVER_URL, "registry-1.docker.io")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("registry.example", "registry.example"),
        ("Registry.Example:5000", "registry.example:5000"),
        ("https://registry.example/v2/", "registry.example"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_a_registry_is_its_host(text: str, key: str) -> None:
    assert login_target(text).key == key


@pytest.mark.parametrize("text", ["", "user@registry.example", "-rf", "a b"])
def test_what_is_not_a_registry_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid registry"):
        login_target(text)


async def test_docker_hub_is_stored_and_removed_under_its_url_key(home: Home) -> None:
    home.write({"auths": {"docker.io": {"auth": basic_auth("old", "old")}, "docker.io/team": {}}})
    store = credential_store(login_target("docker.io"), home.env)
    assert store == CredentialStore(home.config_file, DOCKER_HUB_SERVER_URL, "registry-1.docker.io")
    await save_credentials(store, "hubuser", "hub-pw", home.env)
    assert home.read()["auths"][DOCKER_HUB_SERVER_URL] == {"auth": basic_auth("hubuser", "hub-pw")}
    for name in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        config = load_with_env(env=home.env)
        assert (await config.entry_for_registry(name)).username in ("hubuser", "old")
    removed = await remove_credentials(store, home.env)
    assert removed == [str(home.config_file)]
    # Every key a Hub lookup finds is gone; the namespace key stays.
    assert home.read()["auths"] == {"docker.io/team": {}}


# -- credential helpers -------------------------------------------------------------------


@dataclass
class RecordingHelper:
    """``docker-credential-rec``: appends each verb and its stdin to a log, as JSON lines."""

    bin_dir: Path
    log: Path

    def calls(self) -> list[tuple[str, str]]:
        if not self.log.exists():
            return []
        return [tuple(json.loads(line)) for line in self.log.read_text().splitlines()]  # type: ignore[misc]


@pytest.fixture
def recording_helper(tmp_path: Path, home: Home) -> RecordingHelper:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "helper.log"
    script = bin_dir / "docker-credential-rec"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "verb, data = sys.argv[1], sys.stdin.read()\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps([verb, data]) + '\\n')\n"
        "if verb in ('get', 'erase') and 'gone' in data:\n"
        "    print('credentials not found in native keychain')\n"
        "    sys.exit(1)\n"
        "if verb == 'get':\n"
        "    print(json.dumps({'ServerURL': data, 'Username': 'alice', 'Secret': 's'}))\n"
    )
    script.chmod(0o755)
    home.env["PATH"] = f"{bin_dir}{os.pathsep}{home.env.get('PATH', '')}"
    return RecordingHelper(bin_dir, log)


async def test_login_stores_through_the_configured_helper(
    bearer: Registry, home: Home, recording_helper: RecordingHelper
) -> None:
    stale = {"auth": basic_auth("alice", "an-old-plaintext-password")}
    home.write({"credsStore": "rec", "auths": {bearer.host: stale, "other.example": {}}})
    run = await home.login(bearer.host)
    assert run.code == 0, run.err
    assert f"stored in docker-credential-rec (credsStore in {home.config_file})" in run.out
    [(verb, data)] = recording_helper.calls()
    assert verb == "store"
    assert json.loads(data) == {"ServerURL": bearer.host, "Username": "alice", "Secret": PASSWORD}
    # No password is left in the file: the helper holds it.
    text = home.config_file.read_text()
    assert "an-old-plaintext-password" not in text
    assert basic_auth("alice", PASSWORD) not in text
    assert home.read() == {"credsStore": "rec", "auths": {"other.example": {}}}


async def test_a_cred_helpers_entry_wins_over_creds_store(
    bearer: Registry, home: Home, recording_helper: RecordingHelper
) -> None:
    home.write({"credsStore": "not-installed", "credHelpers": {bearer.host: "rec"}})
    run = await home.login(bearer.host)
    assert run.code == 0, run.err
    assert "(credHelpers in" in run.out
    assert [verb for verb, _ in recording_helper.calls()] == ["store"]


async def test_a_failing_helper_is_exit_3_with_its_stderr_and_no_secret(
    bearer: Registry, home: Home, recording_helper: RecordingHelper
) -> None:
    home.write({"credHelpers": {bearer.host: "rec"}})
    before = home.config_file.read_bytes()
    script = recording_helper.bin_dir / "docker-credential-rec"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.stdin.read()\nsys.exit('the keychain is locked')\n"
    )
    run = await home.login(bearer.host)
    assert run.code == 3, run.err
    run.assert_one_line_error()
    assert "docker-credential-rec store" in run.err
    assert "the keychain is locked" in run.err
    assert PASSWORD not in run.err
    assert home.config_file.read_bytes() == before


async def test_a_missing_creds_store_helper_is_exit_3_and_nothing_is_written(
    bearer: Registry, home: Home
) -> None:
    home.write({"credsStore": "not-installed-xyz"})
    run = await home.login(bearer.host)
    assert run.code == 3
    assert "docker-credential-not-installed-xyz" in run.err
    assert "not found on PATH" in run.err
    assert home.read() == {"credsStore": "not-installed-xyz"}


async def test_logout_erases_from_the_helper_and_the_file(
    home: Home, recording_helper: RecordingHelper
) -> None:
    home.write({"credsStore": "rec", "auths": {"registry.example": {}}})
    run = await home.run("logout", "registry.example")
    assert run.code == 0, run.err
    assert recording_helper.calls() == [("get", "registry.example"), ("erase", "registry.example")]
    assert "from docker-credential-rec, " in run.out
    assert home.read() == {"credsStore": "rec", "auths": {}}
    # A helper with nothing for the registry says so; that is not an error.
    gone = await home.run("logout", "gone.example")
    assert gone.code == 0, gone.err
    assert "Not logged in to gone.example" in gone.out
    assert recording_helper.calls()[-1] == ("get", "gone.example")


# -- the real docker-credential-pass ---------------------------------------------------------


def _pass_get(store: PassStore, server_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-credential-pass", "get"],
        input=server_url,
        env=store.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.helper_pass
async def test_login_and_logout_with_the_real_docker_credential_pass(
    bearer: Registry, pass_store: PassStore, tmp_path: Path
) -> None:
    config_dir = tmp_path / "pass-docker"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"credsStore": "pass"}))
    env = {**pass_store.env, "DOCKER_CONFIG": str(config_dir)}
    run = await run_cli(
        "login", bearer.host, "-u", "alice", "--password-stdin", env=env, stdin=PASSWORD.encode()
    )
    assert run.code == 0, run.err
    assert "stored in docker-credential-pass (credsStore" in run.out
    got = _pass_get(pass_store, bearer.host)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {
        "ServerURL": bearer.host,
        "Username": "alice",
        "Secret": PASSWORD,
    }
    assert PASSWORD not in (config_dir / "config.json").read_text()
    # The lookups read it back through the same helper.
    config = load_with_env(env=env)
    assert await config.entry_for_registry(bearer.host) == ConfigEntry(
        username="alice", password=PASSWORD
    )
    out = await run_cli("logout", bearer.host, env=env)
    assert out.code == 0, out.err
    assert "docker-credential-pass" in out.out
    assert await load_with_env(env=env).entry_for_registry(bearer.host) == ConfigEntry()
    again = await run_cli("logout", bearer.host, env=env)
    assert again.code == 0, again.err
    assert f"Not logged in to {bearer.host}" in again.out
