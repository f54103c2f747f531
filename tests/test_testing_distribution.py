"""The real distribution 2.8 registry, run by aociauth.testing.distribution, behaves as noted.

Plain aiohttp, no middleware: these tests pin down the registry every other
real-registry test relies on, and the harness's promise to leave nothing behind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import pytest_asyncio

from aociauth.testing._jwt import TokenIssuer
from aociauth.testing.distribution import DistributionRegistry, RegistryStartError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ZERO_DIGEST = "sha256:" + "0" * 64
REALM = "http://127.0.0.1:9/token"  # tests/conftest.py: DISTRIBUTION_TOKEN_REALM
SERVICE = "aociauth-test-registry"


# --- helpers -----------------------------------------------------------------


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge_params(header: str) -> dict[str, str]:
    """The parameters of a challenge whose values hold no quotes (all of distribution's)."""
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def scope_items(scope: str) -> set[tuple[str, str, frozenset[str]]]:
    """A scope as a set of (type, name, actions); distribution's order is random."""
    items = set()
    for item in scope.split(" "):
        kind, name, actions = item.split(":")
        items.add((kind, name, frozenset(actions.split(","))))
    return items


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead: nobody may reap orphans here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def children() -> set[int]:
    """Our own child processes."""
    mine = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat.rpartition(")")[2].split()[1]) == os.getpid() and running(int(entry.name)):
            mine.add(int(entry.name))
    return mine


async def until_dead(pid: int) -> None:
    # A liveness bound, not a timing assertion: death comes within milliseconds.
    for _ in range(1000):
        if not running(pid):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"process {pid} is still running")


async def push_blob(
    session: aiohttp.ClientSession,
    base: str,
    repo: str,
    data: bytes,
    headers: Mapping[str, str] | None = None,
) -> str:
    """Upload ``data`` monolithically (POST, then PUT ?digest=) and return its digest."""
    digest = digest_of(data)
    async with session.post(f"{base}/v2/{repo}/blobs/uploads/", headers=headers) as resp:
        assert resp.status == 202, await resp.text()
        location = resp.headers["Location"]
    # The Location is absolute, built from the request's Host.
    assert location.startswith(f"{base}/v2/{repo}/blobs/uploads/")
    separator = "&" if "?" in location else "?"
    put_headers = {**(headers or {}), "Content-Type": "application/octet-stream"}
    async with session.put(
        f"{location}{separator}digest={digest}", data=data, headers=put_headers
    ) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.headers["Docker-Content-Digest"] == digest
    return digest


def oci_manifest(config: bytes, layer: bytes) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest_of(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest_of(layer),
                "size": len(layer),
            }
        ],
    }
    return json.dumps(manifest).encode()


async def push_and_pull_image(
    session: aiohttp.ClientSession,
    base: str,
    repo: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Push a config, a layer and an OCI manifest to ``repo`` and read them all back."""
    headers = dict(headers or {})
    config = json.dumps({"architecture": "amd64", "os": "linux", "repo": repo}).encode()
    layer = f"layer of {repo}".encode()
    for blob in (config, layer):
        digest = await push_blob(session, base, repo, blob, headers)
        async with session.get(f"{base}/v2/{repo}/blobs/{digest}", headers=headers) as resp:
            assert resp.status == 200
            assert await resp.read() == blob
    manifest = oci_manifest(config, layer)
    async with session.put(
        f"{base}/v2/{repo}/manifests/v1",
        data=manifest,
        headers={**headers, "Content-Type": OCI_MANIFEST},
    ) as resp:
        assert resp.status == 201, await resp.text()
        assert resp.headers["Docker-Content-Digest"] == digest_of(manifest)
    async with session.get(
        f"{base}/v2/{repo}/manifests/v1", headers={**headers, "Accept": OCI_MANIFEST}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == OCI_MANIFEST
        assert await resp.read() == manifest


async def get_json(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    async with session.get(url, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


# --- fixtures ----------------------------------------------------------------


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def open_registry() -> AsyncIterator[DistributionRegistry]:
    async with DistributionRegistry() as registry:
        yield registry


# --- open mode ---------------------------------------------------------------


@pytest.mark.registry
async def test_open_registry_answers_v2_on_loopback(
    open_registry: DistributionRegistry, session: aiohttp.ClientSession
) -> None:
    assert re.fullmatch(r"127\.0\.0\.1:\d+", open_registry.host)
    assert open_registry.url == f"http://{open_registry.host}"
    async with session.get(f"{open_registry.url}/v2/") as resp:
        assert resp.status == 200
        assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert "listening on 127.0.0.1:" in open_registry.log_text()


@pytest.mark.registry
async def test_open_registry_round_trips_blobs_and_an_oci_manifest(
    open_registry: DistributionRegistry, session: aiohttp.ClientSession
) -> None:
    await push_and_pull_image(session, open_registry.url, "open/app")


@pytest.mark.registry
async def test_oci_manifest_is_404_without_the_oci_media_type_in_accept(
    open_registry: DistributionRegistry, session: aiohttp.ClientSession
) -> None:
    await push_and_pull_image(session, open_registry.url, "open/accept")
    url = f"{open_registry.url}/v2/open/accept/manifests/v1"
    for accept in ("*/*", "application/vnd.docker.distribution.manifest.v2+json"):
        status, body = await get_json(session, url, {"Accept": accept})
        assert status == 404
        assert body["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert "accept header does not support OCI manifests" in body["errors"][0]["message"]


@pytest.mark.registry
async def test_unknown_repository_gives_manifest_unknown_and_name_unknown(
    open_registry: DistributionRegistry, session: aiohttp.ClientSession
) -> None:
    base = f"{open_registry.url}/v2/open/nothing-here"
    status, body = await get_json(session, f"{base}/manifests/v1", {"Accept": OCI_MANIFEST})
    assert (status, body["errors"][0]["code"]) == (404, "MANIFEST_UNKNOWN")
    status, body = await get_json(session, f"{base}/tags/list")
    assert (status, body["errors"][0]["code"]) == (404, "NAME_UNKNOWN")


@pytest.mark.registry
async def test_delete_stays_disabled_even_if_the_environment_enables_it(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # distribution reads REGISTRY_* variables over its configuration file.
    monkeypatch.setenv("REGISTRY_STORAGE_DELETE_ENABLED", "true")
    async with DistributionRegistry() as registry:
        digest = await push_blob(session, registry.url, "open/undeletable", b"keep me")
        async with session.delete(f"{registry.url}/v2/open/undeletable/blobs/{digest}") as resp:
            assert resp.status == 405
            assert (await resp.json())["errors"][0]["code"] == "UNSUPPORTED"


# --- htpasswd mode -----------------------------------------------------------


@pytest.mark.registry
async def test_htpasswd_challenges_with_basic_realm_and_no_scope(
    distribution_htpasswd: DistributionRegistry, session: aiohttp.ClientSession
) -> None:
    base = distribution_htpasswd.url
    for method, path in (
        ("GET", "/v2/"),
        ("GET", "/v2/team/app/tags/list"),
        ("POST", "/v2/team/app/blobs/uploads/"),
    ):
        async with session.request(method, f"{base}{path}") as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Basic realm="aociauth-test"'
            body = await resp.json()
            assert body["errors"][0]["code"] == "UNAUTHORIZED"


@pytest.mark.registry
async def test_htpasswd_accepts_each_user_and_opens_the_repository_routes(
    distribution_htpasswd: DistributionRegistry, session: aiohttp.ClientSession
) -> None:
    assert len(distribution_htpasswd.users) == 2
    for user, password in distribution_htpasswd.users.items():
        async with session.get(
            f"{distribution_htpasswd.url}/v2/", headers=basic(user, password)
        ) as resp:
            assert resp.status == 200
        await push_and_pull_image(
            session, distribution_htpasswd.url, f"basic/{user}", basic(user, password)
        )


@pytest.mark.registry
async def test_htpasswd_refuses_a_wrong_password_and_an_unknown_user(
    distribution_htpasswd: DistributionRegistry, session: aiohttp.ClientSession
) -> None:
    user, password = next(iter(distribution_htpasswd.users.items()))
    for headers in (basic(user, password + "x"), basic("mallory", password)):
        async with session.get(f"{distribution_htpasswd.url}/v2/", headers=headers) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == 'Basic realm="aociauth-test"'


# --- token mode --------------------------------------------------------------


def grant(name: str, *actions: str) -> list[dict[str, object]]:
    return [{"type": "repository", "name": name, "actions": list(actions)}]


@pytest.mark.registry
async def test_token_v2_challenge_has_realm_and_service_and_no_scope(
    distribution_token: DistributionRegistry, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{distribution_token.url}/v2/") as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == f'Bearer realm="{REALM}",service="{SERVICE}"'
        assert (await resp.json())["errors"][0]["detail"] is None


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/v2/team/app/manifests/v1", "repository:team/app:pull"),
        ("HEAD", "/v2/team/app/blobs/" + ZERO_DIGEST, "repository:team/app:pull"),
        ("GET", "/v2/team/app/tags/list", "repository:team/app:pull"),
        ("POST", "/v2/team/app/blobs/uploads/", "repository:team/app:pull,push"),
        ("PUT", "/v2/team/app/manifests/v1", "repository:team/app:pull,push"),
        ("PATCH", "/v2/team/app/blobs/uploads/some-uuid", "repository:team/app:pull,push"),
        ("DELETE", "/v2/team/app/manifests/" + ZERO_DIGEST, "repository:team/app:delete"),
        (
            "POST",
            f"/v2/team/app/blobs/uploads/?mount={ZERO_DIGEST}&from=library/alpha",
            "repository:library/alpha:pull repository:team/app:pull,push",
        ),
        ("GET", "/v2/_catalog", "registry:catalog:*"),
    ],
)
@pytest.mark.registry
async def test_token_route_challenges_name_the_scope_needed(
    distribution_token: DistributionRegistry,
    session: aiohttp.ClientSession,
    method: str,
    path: str,
    scope: str,
) -> None:
    async with session.request(method, f"{distribution_token.url}{path}") as resp:
        assert resp.status == 401
        header = resp.headers["WWW-Authenticate"]
    assert header.startswith("Bearer ")
    params = challenge_params(header)
    assert set(params) == {"realm", "service", "scope"}
    assert (params["realm"], params["service"]) == (REALM, SERVICE)
    assert scope_items(params["scope"]) == scope_items(scope)


@pytest.mark.registry
async def test_token_with_pull_push_opens_that_repository(
    distribution_token: DistributionRegistry,
    distribution_token_issuer: TokenIssuer,
    session: aiohttp.ClientSession,
) -> None:
    token = distribution_token_issuer.issue(
        subject="alice", access=grant("team/app", "pull", "push"), expires_in=300
    )
    async with session.get(f"{distribution_token.url}/v2/", headers=bearer(token)) as resp:
        assert resp.status == 200
    await push_and_pull_image(session, distribution_token.url, "team/app", bearer(token))


@pytest.mark.registry
async def test_token_without_the_access_gets_insufficient_scope(
    distribution_token: DistributionRegistry,
    distribution_token_issuer: TokenIssuer,
    session: aiohttp.ClientSession,
) -> None:
    issue = distribution_token_issuer.issue
    empty = issue(subject="alice", access=[], expires_in=300)
    pull_only = issue(subject="alice", access=grant("team/app", "pull"), expires_in=300)
    other_repo = issue(subject="alice", access=grant("team/other", "pull", "push"), expires_in=300)
    async with session.get(f"{distribution_token.url}/v2/", headers=bearer(empty)) as resp:
        assert resp.status == 200  # any valid token opens /v2/
    cases = [
        (empty, "GET", "/v2/team/app/manifests/v1", "repository:team/app:pull"),
        (other_repo, "GET", "/v2/team/app/manifests/v1", "repository:team/app:pull"),
        (pull_only, "POST", "/v2/team/app/blobs/uploads/", "repository:team/app:pull,push"),
        (
            issue(subject="alice", access=grant("team/app", "pull", "push"), expires_in=300),
            "POST",
            f"/v2/team/app/blobs/uploads/?mount={ZERO_DIGEST}&from=library/alpha",
            "repository:library/alpha:pull repository:team/app:pull,push",
        ),
    ]
    for token, method, path, scope in cases:
        async with session.request(
            method, f"{distribution_token.url}{path}", headers=bearer(token)
        ) as resp:
            assert resp.status == 401, (method, path)
            params = challenge_params(resp.headers["WWW-Authenticate"])
            assert params["error"] == "insufficient_scope"
            assert scope_items(params["scope"]) == scope_items(scope)
            assert (await resp.json())["errors"][0]["code"] == "UNAUTHORIZED"


@pytest.mark.registry
async def test_catalog_needs_the_literal_star_action(
    distribution_token: DistributionRegistry,
    distribution_token_issuer: TokenIssuer,
    session: aiohttp.ClientSession,
) -> None:
    def catalog(action: str) -> str:
        access = [{"type": "registry", "name": "catalog", "actions": [action]}]
        return distribution_token_issuer.issue(subject="alice", access=access, expires_in=300)

    url = f"{distribution_token.url}/v2/_catalog"
    async with session.get(url, headers=bearer(catalog("pull"))) as resp:
        assert resp.status == 401
    async with session.get(url, headers=bearer(catalog("*"))) as resp:
        assert resp.status == 200


@pytest.mark.parametrize(
    ("now_offset", "expires_in", "accepted"),
    [
        (-3600, 60, False),  # expired an hour ago
        (-90, 60, True),  # expired 30 s ago: inside the 60 s leeway
        (3600, 300, False),  # not valid for another hour
    ],
)
@pytest.mark.registry
async def test_token_times_get_sixty_seconds_of_leeway_and_no_more(
    distribution_token: DistributionRegistry,
    distribution_token_issuer: TokenIssuer,
    session: aiohttp.ClientSession,
    now_offset: int,
    expires_in: int,
    accepted: bool,
) -> None:
    token = distribution_token_issuer.issue(
        subject="alice",
        access=grant("team/leeway", "pull"),
        expires_in=expires_in,
        now=time.time() + now_offset,
    )
    url = f"{distribution_token.url}/v2/team/leeway/tags/list"
    async with session.get(url, headers=bearer(token)) as resp:
        if accepted:
            # Authorised; nothing was ever pushed to team/leeway.
            assert resp.status == 404
            assert (await resp.json())["errors"][0]["code"] == "NAME_UNKNOWN"
        else:
            assert resp.status == 401
            params = challenge_params(resp.headers["WWW-Authenticate"])
            assert params["error"] == "invalid_token"
            assert params["scope"] == "repository:team/leeway:pull"


@pytest.mark.registry
async def test_token_for_another_audience_or_from_an_untrusted_root_is_invalid(
    distribution_token: DistributionRegistry,
    distribution_token_issuer: TokenIssuer,
    session: aiohttp.ClientSession,
) -> None:
    stranger = TokenIssuer(issuer=distribution_token_issuer.issuer, service=SERVICE)
    access = grant("team/app", "pull")
    tokens = [
        distribution_token_issuer.issue(
            subject="alice", access=access, expires_in=300, audience="another-registry"
        ),
        stranger.issue(subject="alice", access=access, expires_in=300),
    ]
    for token in tokens:
        for path in ("/v2/", "/v2/team/app/tags/list"):
            async with session.get(
                f"{distribution_token.url}{path}", headers=bearer(token)
            ) as resp:
                assert resp.status == 401
                params = challenge_params(resp.headers["WWW-Authenticate"])
                assert params["error"] == "invalid_token"


@pytest.mark.registry
async def test_token_registry_ignores_basic_credentials(
    distribution_token: DistributionRegistry, session: aiohttp.ClientSession
) -> None:
    async with session.get(
        f"{distribution_token.url}/v2/", headers=basic("alice", "alice-password")
    ) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == f'Bearer realm="{REALM}",service="{SERVICE}"'


# --- the harness's lifecycle -------------------------------------------------


@pytest.mark.registry
async def test_exit_stops_the_registry_and_removes_its_directory() -> None:
    async with DistributionRegistry() as registry:
        pid, directory = registry.pid, registry.directory
        assert pid is not None
        assert running(pid)
        assert directory is not None
        assert (directory / "config.yml").is_file()
        assert pid in children()
    assert not running(pid)
    assert not directory.exists()
    assert registry.pid is None
    assert registry.directory is None
    assert "listening on 127.0.0.1:" in registry.log_text()
    with pytest.raises(RuntimeError, match="not running"):
        _ = registry.url


@pytest.mark.registry
async def test_an_error_in_the_block_still_stops_the_registry() -> None:
    class Boom(Exception):
        pass

    registry = DistributionRegistry()
    seen = []

    async def use() -> None:
        async with registry:
            seen.append((registry.pid, registry.directory))
            raise Boom

    with pytest.raises(Boom):
        await use()
    [(pid, directory)] = seen
    assert pid is not None
    assert not running(pid)
    assert directory is not None
    assert not directory.exists()


@pytest.mark.registry
async def test_cancelling_the_block_still_stops_the_registry() -> None:
    inside = asyncio.Event()
    registry = DistributionRegistry()

    async def use() -> None:
        async with registry:
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(use())
    await inside.wait()
    pid, directory = registry.pid, registry.directory
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pid is not None
    assert not running(pid)
    assert directory is not None
    assert not directory.exists()


@pytest.mark.registry
async def test_a_cancel_scope_that_stays_cancelled_still_lets_the_registry_stop() -> None:
    # anyio cancellation is level-triggered: every await in the cancelled scope
    # is cancelled again, the waits of the exit included unless shielded.
    registry = DistributionRegistry()
    with anyio.CancelScope() as scope:
        async with registry:
            pid, directory = registry.pid, registry.directory
            scope.cancel()
            await anyio.sleep(0)
    assert scope.cancelled_caught
    assert pid is not None
    assert not running(pid)
    assert directory is not None
    assert not directory.exists()


@pytest.mark.registry
async def test_two_registries_run_side_by_side_on_their_own_ports() -> None:
    async with DistributionRegistry() as one, DistributionRegistry() as two:
        assert one.host != two.host
        assert one.directory != two.directory


@pytest.mark.registry
async def test_a_registry_that_exits_at_start_raises_with_its_log_and_leaves_nothing() -> None:
    before = children()
    registry = DistributionRegistry(
        auth="token", realm=REALM, service=SERVICE, issuer="nobody", rootcertbundle=b"not PEM"
    )
    with pytest.raises(RegistryStartError, match="exited with status") as caught:
        await registry.__aenter__()
    assert "token signing root certificate" in str(caught.value)
    assert registry.directory is None
    assert children() == before


@pytest.fixture
def sleeper(tmp_path: Path) -> str:
    """A stand-in binary that starts and never answers."""
    path = tmp_path / "fake-registry"
    path.write_text("#!/bin/sh\nexec sleep 600\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.registry
async def test_a_registry_that_never_answers_is_killed_at_the_start_timeout(sleeper: str) -> None:
    before = children()
    registry = DistributionRegistry(binary=sleeper, start_timeout=0.5)
    with pytest.raises(RegistryStartError, match=r"did not answer within 0\.5 s"):
        await registry.__aenter__()
    assert registry.directory is None
    assert children() == before


@pytest.mark.registry
async def test_cancelling_the_start_kills_the_process(sleeper: str) -> None:
    before = children()
    registry = DistributionRegistry(binary=sleeper)
    task = asyncio.create_task(registry.__aenter__())
    for _ in range(1000):
        if registry.pid is not None:
            break
        await asyncio.sleep(0.01)
    pid = registry.pid
    assert pid is not None
    assert running(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not running(pid)
    assert registry.directory is None
    assert children() == before


# A program that starts a registry, reports it, and waits to be interrupted. It
# handles SIGINT as a program started from a terminal does: a child inherits an
# ignored SIGINT (pytest run in the background by a non-interactive shell, under
# nohup or setsid), and Python then installs no KeyboardInterrupt handler.
HOLDER = """
import asyncio, signal, sys
from aociauth.testing.distribution import DistributionRegistry

signal.signal(signal.SIGINT, signal.default_int_handler)

async def main():
    registry = DistributionRegistry()
    await registry.__aenter__()
    print(registry.pid, registry.directory, flush=True)
    if sys.argv[1] == "leave":
        return  # never exits the context: only the finalizer is left
    try:
        await asyncio.Event().wait()
    finally:
        await registry.__aexit__(None, None, None)

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def held_registry(how: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, Path]]:
    """Run HOLDER; yield it, its registry's pid and directory; leave none of them behind."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, how, stdout=asyncio.subprocess.PIPE
    )
    pid, directory = 0, None
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        pid_text, directory_text = line.decode().split()
        pid, directory = int(pid_text), Path(directory_text)
        yield proc, pid, directory
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if pid and running(pid):
            os.kill(pid, signal.SIGKILL)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.registry
async def test_an_interrupted_program_stops_its_registry() -> None:
    async with held_registry("wait") as (proc, pid, directory):
        assert running(pid)
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 60)
        assert not running(pid)
        assert not directory.exists()


@pytest.mark.registry
async def test_a_program_leaving_without_exiting_the_context_stops_its_registry_at_exit() -> None:
    async with held_registry("leave") as (proc, pid, directory):
        await asyncio.wait_for(proc.wait(), 60)
        await until_dead(pid)
        assert not directory.exists()


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
@pytest.mark.registry
async def test_a_killed_program_takes_its_registry_with_it() -> None:
    # Nothing is left to remove the directory: held_registry does.
    async with held_registry("wait") as (proc, pid, _):
        proc.kill()
        await asyncio.wait_for(proc.wait(), 60)
        await until_dead(pid)


# --- argument checks (no registry started) ---------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": {"a": "b"}}, "open registry takes no users"),
        ({"auth": "htpasswd"}, "needs users"),
        ({"auth": "htpasswd", "users": {"a:b": "c"}}, "unusable htpasswd user name"),
        ({"auth": "htpasswd", "users": {"a": "b"}, "service": "s"}, "takes no service"),
        ({"auth": "token", "realm": "r", "service": "s"}, "needs issuer, rootcertbundle"),
        ({"auth": "basic"}, "unknown auth mode"),
    ],
)
def test_inconsistent_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DistributionRegistry(**kwargs)
