"""Credential helpers as real processes: protocol, bounds, process groups, single flight.

The fake helper (helpers_fake/fake_helper.py) is installed as an executable
in a temporary directory that only the env given to the runner puts on PATH.
Runs are counted from the lines the fake appends to a log file; processes it
leaves behind are found from the pids it records. The last section follows
a helper's answer, or its failure, through the middleware, with the toolkit's
fake helper (aociauth.testing.credhelper).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import aociauth
from aociauth.config import DOCKER_HUB_SERVER_URL, ConfigEntry, load_with_env
from aociauth.errors import HelperError, HelperNotFoundError, HelperTimeoutError
from aociauth.helpers import (
    DEFAULT_HELPER_TIMEOUT,
    MAX_HELPER_OUTPUT,
    exec_helper,
    exec_helper_with_env,
    list_helper_with_env,
)
from aociauth.testing import Registry, TokenServer
from aociauth.testing.client import loopback_client
from aociauth.testing.credhelper import FakeHelper, HelperAnswer, install_credential_helper
from aociauth.testing.leaks import HELPER_SECRET, PASSWORD, assert_clean, exception_texts
from aociauth.testing.scripted import ScriptedServer

FAKE = Path(__file__).parent / "helpers_fake" / "fake_helper.py"


def install(directory: Path, filename: str) -> Path:
    """The fake helper as an executable ``directory/filename``, run by this interpreter."""
    source = FAKE.read_text().split("\n", 1)[1]
    target = directory / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"#!{sys.executable}\n{source}")
    target.chmod(0o755)
    return target


@dataclass
class Fakes:
    bindir: Path
    log: Path
    pidfile: Path
    env: dict[str, str]

    def install(self, name: str = "fake") -> Path:
        return install(self.bindir, f"docker-credential-{name}")

    def runs(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def pids(self, kind: str) -> list[int]:
        if not self.pidfile.exists():
            return []
        lines = [line.split() for line in self.pidfile.read_text().splitlines()]
        return [int(pid) for k, pid in lines if k == kind]


@pytest.fixture
def fakes(tmp_path: Path) -> Any:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = {
        "PATH": f"{bindir}{os.pathsep}{os.defpath}",
        "HOME": str(tmp_path),
        "FAKE_HELPER_LOG": str(tmp_path / "runs.log"),
        "FAKE_HELPER_PIDS": str(tmp_path / "pids"),
    }
    f = Fakes(bindir, tmp_path / "runs.log", tmp_path / "pids", env)
    f.install()
    yield f
    # Whatever a failed test left running must not outlive it.
    for pid in f.pids("child") + f.pids("helper"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 9)


def is_gone(pid: int) -> bool:
    """Dead: no such process, or a zombie (init here does not reap orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def wait_gone(pid: int) -> bool:
    # SIGKILL is delivered at once, but the kernel may take a moment to tear
    # the process down; this bounds the wait, it measures nothing.
    for _ in range(1000):
        if is_gone(pid):
            return True
        await asyncio.sleep(0.01)
    return False


def reaped(pid: int) -> bool:
    """The helper was waited for: it is no longer a child of this process."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


# -- the protocol --------------------------------------------------------------------


async def test_a_good_answer(fakes: Fakes) -> None:
    run = exec_helper_with_env(fakes.env)
    entry = await run("fake", "registry-with-basic-auth.com")
    assert entry == ConfigEntry(username="someuser", password="somesecret")
    [record] = fakes.runs()
    # Only "get" in argv; the server URL, unchanged and without a newline, on stdin.
    assert record["argv"] == ["get"]
    assert record["stdin"] == "registry-with-basic-auth.com"
    assert reaped(record["pid"])


async def test_token_username_means_a_refresh_token(fakes: Fakes) -> None:
    entry = await exec_helper_with_env(fakes.env)("fake", "registry-with-token.com")
    assert entry == ConfigEntry(refresh_token="sometoken")


@pytest.mark.parametrize(
    "server",
    ["empty.test", "not-found.test", "not-found-stderr.test"],
    ids=["empty", "stdout", "stderr"],
)
async def test_no_credentials(fakes: Fakes, server: str) -> None:
    assert await exec_helper_with_env(fakes.env)("fake", server) == ConfigEntry()


@pytest.mark.parametrize(
    "server",
    [
        "braces.test",
        "server-only.test",
        "null-fields.test",
        "username-only.test",
        "secret-only.test",
        "empty-secret.test",
    ],
)
async def test_missing_fields_read_as_empty_and_mean_no_credentials(
    fakes: Fakes, server: str
) -> None:
    """Go decodes an absent ``Username``/``Secret`` as "" (docker-credential-helpers
    ``client.Get``, and the original's ``ExecHelper``): containers/image's test helper
    answers ``{}`` for a server it does not know. Half an answer is no credentials."""
    assert await exec_helper_with_env(fakes.env)("fake", server) == ConfigEntry()
    # Through a configuration, the lookup goes on to the next source.
    inline = json.dumps({"credHelpers": {server: "fake"}})
    (Path(fakes.env["HOME"]) / ".docker").mkdir(exist_ok=True)
    (Path(fakes.env["HOME"]) / ".docker" / "config.json").write_text(
        json.dumps({"auths": {server: {"username": "u", "password": "from-file"}}})
    )
    config = load_with_env(env={**fakes.env, "DOCKER_AUTH_CONFIG": inline})
    resolution = await config.resolve(server)
    assert resolution.entry == ConfigEntry(username="u", password="from-file")
    assert resolution.source == str(Path(fakes.env["HOME"]) / ".docker" / "config.json")


async def test_list_reads_the_helpers_listing(fakes: Fakes) -> None:
    listing = {"https://index.docker.io/v1/": "hubuser", "r.test": "alice"}
    env = {**fakes.env, "FAKE_HELPER_LIST": json.dumps(listing)}
    assert await list_helper_with_env(env)("fake") == listing
    [record] = fakes.runs()
    assert record["argv"] == ["list"]


@pytest.mark.parametrize("listing", ["[]", '{"r.test": 5}', "not json", '{"a": "b"} {}'])
async def test_a_list_that_is_not_an_object_of_strings_is_an_error(
    fakes: Fakes, listing: str
) -> None:
    env = {**fakes.env, "FAKE_HELPER_LIST": listing}
    with pytest.raises(HelperError, match="docker-credential-fake for list"):
        await list_helper_with_env(env)("fake")


async def test_list_of_a_missing_or_failing_helper(fakes: Fakes) -> None:
    with pytest.raises(HelperNotFoundError):
        await list_helper_with_env(fakes.env)("absent")
    with pytest.raises(HelperError, match="list is not supported"):
        await list_helper_with_env(fakes.env)("fake")


async def test_the_helper_runs_with_the_given_env(fakes: Fakes) -> None:
    env = {**fakes.env, "TEST_SECRET": "foo"}
    entry = await exec_helper_with_env(env)("fake", "registry-with-env-lookup.com")
    assert entry == ConfigEntry(username="someuser", password="foo")


async def test_the_env_is_copied_when_the_runner_is_made(fakes: Fakes) -> None:
    env = {**fakes.env, "TEST_SECRET": "before"}
    run = exec_helper_with_env(env)
    env["TEST_SECRET"] = "after"
    assert (await run("fake", "registry-with-env-lookup.com")).password == "before"


@pytest.mark.parametrize(
    ("server", "secret"),
    [
        ("garbage.test", "GARBAGE-SECRET"),
        ("two.test", "TWO-SECRET"),
        ("bad-types.test", "TYPED-SECRET"),
        ("list.test", "LIST-SECRET"),
        ("null.test", None),
        ("number-secret.test", None),
        ("crlf-secret.test", "CRLF-SECRET"),
        ("nul-username.test", "NUL-SECRET"),
        ("exit-zero-not-found.test", None),
    ],
)
async def test_answers_that_break_the_protocol(
    fakes: Fakes, server: str, secret: str | None
) -> None:
    with pytest.raises(HelperError) as info:
        await exec_helper_with_env(fakes.env)("fake", server)
    assert type(info.value) is HelperError
    assert "docker-credential-fake" in str(info.value)
    assert server in str(info.value)
    if secret is not None:
        assert secret not in str(info.value)
        assert secret not in repr(info.value)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


async def test_a_failure_carries_stderr_never_stdout(fakes: Fakes) -> None:
    with pytest.raises(HelperError) as info:
        await exec_helper_with_env(fakes.env)("fake", "fail-with-secret.test")
    error = info.value
    assert "STDOUT-SECRET" not in str(error)
    assert "STDOUT-SECRET" not in error.stderr
    assert "exploded badly" in str(error)
    assert "\x1b" not in str(error)
    assert "\x07" not in str(error)
    assert error.stderr == "helper [31mexploded badly"
    assert error.exit_code == 3
    assert error.helper == "fake"
    assert error.registry == "fail-with-secret.test"


async def test_the_original_error_case(fakes: Fakes) -> None:
    with pytest.raises(HelperError, match="some error") as info:
        await exec_helper_with_env(fakes.env)("fake", "registry-with-error.com")
    assert info.value.exit_code == 1


async def test_huge_output_is_capped_and_the_helper_killed(fakes: Fakes) -> None:
    with pytest.raises(HelperError, match=f"more than {MAX_HELPER_OUTPUT} bytes") as info:
        await exec_helper_with_env(fakes.env)("fake", "huge.test")
    assert not isinstance(info.value, HelperTimeoutError)
    [pid] = fakes.pids("helper")
    assert reaped(pid)
    assert await wait_gone(pid)


async def test_stderr_is_read_but_not_parsed_and_its_message_is_trimmed(fakes: Fakes) -> None:
    # 1.2 MB of noise on stderr does not block the helper or spoil its answer.
    entry = await exec_helper_with_env(fakes.env)("fake", "big-stderr.test")
    assert entry == ConfigEntry(username="alice", password="s3cret")


# -- names and PATH ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "a b", "$(x)", "", ".hidden", "-x", "x;y", "é", "a" * 200]
)
async def test_bad_helper_names_are_refused_and_nothing_runs(
    fakes: Fakes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # Put an executable exactly where each name would lead, so that running
    # anything would show up in the log.
    if name and len(name) < 100:
        install(fakes.bindir, f"docker-credential-{name}")
        install(tmp_path, f"docker-credential-{name}")
    monkeypatch.chdir(tmp_path)
    env = {**fakes.env, "PATH": f"{fakes.bindir}{os.pathsep}.{os.pathsep}{os.defpath}"}
    with pytest.raises(HelperError, match="refused") as info:
        await exec_helper_with_env(env)(name, "registry-with-basic-auth.com")
    assert type(info.value) is HelperError
    assert fakes.runs() == []


async def test_a_helper_not_on_path(fakes: Fakes) -> None:
    with pytest.raises(HelperNotFoundError) as info:
        await exec_helper_with_env(fakes.env)("missing", "r.test")
    assert "docker-credential-missing" in str(info.value)
    assert "r.test" in str(info.value)
    assert info.value.helper == "missing"


async def test_helpers_are_found_on_the_envs_path_not_ours(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", os.defpath)
    entry = await exec_helper_with_env(fakes.env)("fake", "registry-with-basic-auth.com")
    assert entry.username == "someuser"
    with pytest.raises(HelperNotFoundError):
        await exec_helper("fake", "registry-with-basic-auth.com")
    no_path = {k: v for k, v in fakes.env.items() if k != "PATH"}
    with pytest.raises(HelperNotFoundError):
        await exec_helper_with_env(no_path)("fake", "registry-with-basic-auth.com")


async def test_exec_helper_uses_our_environment(
    fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", fakes.env["PATH"])
    monkeypatch.setenv("FAKE_HELPER_LOG", str(fakes.log))
    monkeypatch.setenv("TEST_SECRET", "from-our-env")
    assert (await exec_helper("fake", "registry-with-env-lookup.com")).password == "from-our-env"
    assert len(fakes.runs()) == 1


async def test_a_file_that_is_not_executable_is_not_a_helper(fakes: Fakes) -> None:
    (fakes.bindir / "docker-credential-plain").write_text("not a program")
    with pytest.raises(HelperNotFoundError):
        await exec_helper_with_env(fakes.env)("plain", "r.test")


async def test_a_helper_that_cannot_be_executed(fakes: Fakes) -> None:
    bad = fakes.bindir / "docker-credential-noexec"
    bad.write_text("#!/nonexistent/interpreter\n")
    bad.chmod(0o755)
    with pytest.raises(HelperError, match="cannot run it") as info:
        await exec_helper_with_env(fakes.env)("noexec", "r.test")
    assert type(info.value) is HelperError
    assert "docker-credential-noexec" in str(info.value)


# -- bounds: timeouts, process groups, cancellation -----------------------------------


def test_timeout_settings() -> None:
    assert DEFAULT_HELPER_TIMEOUT == 60.0
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="positive"):
            exec_helper_with_env(None, timeout=bad)
    assert callable(exec_helper_with_env(None, timeout=None))


async def test_no_timeout_still_answers(fakes: Fakes) -> None:
    entry = await exec_helper_with_env(fakes.env, timeout=None)("fake", "registry-with-token.com")
    assert entry.refresh_token == "sometoken"


async def test_a_hanging_helper_times_out_and_its_group_is_killed(fakes: Fakes) -> None:
    with pytest.raises(HelperTimeoutError) as info:
        await exec_helper_with_env(fakes.env, timeout=0.5)("fake", "hang.test")
    assert "0.5 s" in str(info.value)
    assert info.value.helper == "fake"
    assert info.value.registry == "hang.test"
    [helper] = fakes.pids("helper")
    [child] = fakes.pids("child")
    assert reaped(helper)
    assert await wait_gone(helper)
    # The grandchild held the pipes open; it was in the helper's group.
    assert await wait_gone(child)


async def test_a_helper_that_closes_stdout_and_keeps_running_times_out(fakes: Fakes) -> None:
    # Long enough for a loaded machine to start the helper (and record its pid) before
    # the timeout: the helper never ends, so the wait is the timeout whatever it is.
    with pytest.raises(HelperTimeoutError):
        await exec_helper_with_env(fakes.env, timeout=3.0)("fake", "stdout-closed.test")
    [helper] = fakes.pids("helper")
    assert reaped(helper)
    assert await wait_gone(helper)


async def test_a_process_left_holding_the_pipes_does_not_hold_us(fakes: Fakes) -> None:
    # The helper answers and exits, leaving a child with its stdout; with no
    # timeout at all, the answer still comes and the child is killed.
    entry = await exec_helper_with_env(fakes.env, timeout=None)("fake", "leftover.test")
    assert entry == ConfigEntry(username="alice", password="s3cret")
    [child] = fakes.pids("child")
    assert await wait_gone(child)


async def test_cancelling_the_caller_kills_the_helper_group(fakes: Fakes) -> None:
    task = asyncio.ensure_future(exec_helper_with_env(fakes.env, timeout=None)("fake", "hang.test"))
    for _ in range(3000):
        if fakes.pids("child"):
            break
        await asyncio.sleep(0.01)
    [child] = fakes.pids("child")
    [helper] = fakes.pids("helper")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reaped(helper)
    assert await wait_gone(helper)
    assert await wait_gone(child)


# -- through the configuration (the Go original's helper tests, with real processes) --


def config_with(fakes: Fakes, document: dict[str, Any], **env: str) -> Any:
    directory = Path(fakes.env["HOME"]) / "docker"
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(document))
    return load_with_env(env={**fakes.env, "DOCKER_CONFIG": str(directory), **env})


async def test_config_with_helper_basic_token_and_not_found(fakes: Fakes) -> None:
    c = config_with(
        fakes,
        {
            "credHelpers": {
                "registry-with-basic-auth.com": "fake",
                "registry-with-token.com": "fake",
                "other.com": "fake",
            }
        },
    )
    assert await c.entry_for_registry("registry-with-basic-auth.com") == ConfigEntry(
        username="someuser", password="somesecret"
    )
    assert await c.entry_for_registry("registry-with-token.com") == ConfigEntry(
        refresh_token="sometoken"
    )
    assert await c.entry_for_registry("other.com") == ConfigEntry()


async def test_config_with_helper_other_error(fakes: Fakes) -> None:
    c = config_with(fakes, {"credHelpers": {"registry-with-error.com": "fake"}})
    with pytest.raises(HelperError, match="some error"):
        await c.entry_for_registry("registry-with-error.com")


async def test_config_with_default_helper(fakes: Fakes) -> None:
    c = config_with(fakes, {"credsStore": "fake"})
    assert (await c.entry_for_registry("registry-with-basic-auth.com")).username == "someuser"


async def test_config_with_default_helper_not_found(fakes: Fakes) -> None:
    c = config_with(
        fakes,
        {
            "credsStore": "definitely-not-found-executable",
            "auths": {"registry-with-basic-auth.com": {"username": "u1", "password": "p"}},
        },
    )
    assert await c.entry_for_registry("registry-with-basic-auth.com") == ConfigEntry(
        username="u1", password="p"
    )


async def test_config_with_specific_helper_not_found(fakes: Fakes) -> None:
    c = config_with(
        fakes, {"credHelpers": {"registry-with-basic-auth.com": "definitely-not-found-executable"}}
    )
    with pytest.raises(
        HelperNotFoundError, match="docker-credential-definitely-not-found-executable"
    ):
        await c.entry_for_registry("registry-with-basic-auth.com")


async def test_config_with_helper_and_explicit_env(fakes: Fakes) -> None:
    c = config_with(
        fakes, {"credHelpers": {"registry-with-env-lookup.com": "fake"}}, TEST_SECRET="foo"
    )
    assert await c.entry_for_registry("registry-with-env-lookup.com") == ConfigEntry(
        username="someuser", password="foo"
    )


async def test_config_with_a_bad_store_name_runs_nothing(fakes: Fakes) -> None:
    c = config_with(
        fakes,
        {"credsStore": "../bin/docker-credential-fake", "auths": {"r.test": {"username": "u"}}},
    )
    with pytest.raises(HelperError, match="refused"):
        await c.entry_for_registry("r.test")
    assert fakes.runs() == []


@pytest.mark.parametrize("host", ["docker.io", "index.docker.io", "registry-1.docker.io"])
async def test_config_asks_helpers_for_the_hub_url(fakes: Fakes, host: str) -> None:
    c = config_with(fakes, {"credsStore": "fake"})
    assert await c.entry_for_registry(host) == ConfigEntry(username="hubuser", password="hubsecret")
    assert [r["stdin"] for r in fakes.runs()] == [DOCKER_HUB_SERVER_URL]


async def test_fifty_concurrent_lookups_run_the_helper_once(fakes: Fakes) -> None:
    c = config_with(fakes, {"credsStore": "fake"})
    entries = await asyncio.gather(
        *(c.entry_for_registry("registry-with-basic-auth.com") for _ in range(50))
    )
    assert set(entries) == {ConfigEntry(username="someuser", password="somesecret")}
    assert len(fakes.runs()) == 1
    await c.entry_for_registry("registry-with-basic-auth.com")
    assert len(fakes.runs()) == 2


async def test_a_cancelled_lookup_leaves_the_shared_helper_run_alone(
    fakes: Fakes, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    c = config_with(fakes, {"credsStore": "fake"}, FAKE_HELPER_GATE=str(gate))
    first = asyncio.ensure_future(c.entry_for_registry("gate.test"))
    second = asyncio.ensure_future(c.entry_for_registry("gate.test"))
    for _ in range(3000):
        if fakes.runs():
            break
        await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.touch()
    assert await second == ConfigEntry(username="gated", password="gatesecret")
    assert len(fakes.runs()) == 1


# -- a helper's answer or failure, through the middleware -----------------------------------------
# Credential helpers, end to end through the middleware.
#
# tests/test_helpers.py proves the helper runner itself (protocol, caps,
# timeouts, process groups). These tests follow a helper's answer, or its
# failure, through the middleware: what the caller sees, what the servers get,
# and that one slow helper holds up no other registry (security.md T-H1,
# T-H4, T-H8, T-H9, T-H11, T-H13, CVE-2021-41092).
#
# The helper is a small script written for each test; the registry's host name
# (``gate.test``, ``secret.test``, ...: all loopback) tells it how to behave.


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
