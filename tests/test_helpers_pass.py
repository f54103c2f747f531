"""The real ``docker-credential-pass`` (Debian's golang-docker-credential-helpers).

A throw-away GnuPG home with a passphrase-less key and a password store are
made for the module; credentials are stored with the helper's own ``store``
command and read back through ``load_with_env`` and the lookups, exactly as a
user's ``docker login`` with ``"credsStore": "pass"`` would leave them.
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from aociauth.config import (
    DOCKER_HUB_SERVER_URL,
    ConfigEntry,
    Resolution,
)
from aociauth.helpers import exec_helper_with_env
from aociauth.testing.passstore import PassStore

pytestmark = pytest.mark.helper_pass


@pytest.fixture(scope="module")
def store(pass_store: PassStore) -> PassStore:
    """The module's store (conftest's), holding the credentials these tests read back."""
    pass_store.store("reg.example.test", "alice", "s3cret")
    pass_store.store(DOCKER_HUB_SERVER_URL, "hubuser", "hub-s3cret")
    pass_store.store("acr.example.test", "<token>", "identity-token")
    return pass_store


async def test_cred_helpers_entry(store: PassStore) -> None:
    c = store.config("helpers", {"credHelpers": {"reg.example.test": "pass"}})
    resolution = await c.resolve("reg.example.test")
    assert resolution.entry == ConfigEntry(username="alice", password="s3cret")
    assert (resolution.kind, resolution.helper) == ("credHelpers", "pass")


async def test_creds_store(store: PassStore) -> None:
    c = store.config("store", {"credsStore": "pass", "auths": {"reg.example.test": {}}})
    resolution = await c.resolve("reg.example.test")
    assert resolution.entry == ConfigEntry(username="alice", password="s3cret")
    assert (resolution.kind, resolution.helper) == ("credsStore", "pass")


async def test_an_unknown_host_has_no_credentials(store: PassStore) -> None:
    # docker-credential-pass 0.6 answers {"Username": "", "Secret": ""} with
    # exit 0 here; later versions say "credentials not found" with exit 1.
    # Either way: no credentials, no error.
    raw = subprocess.run(
        ["docker-credential-pass", "get"],
        input="unknown.example.test",
        env=store.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if raw.returncode == 0:
        answer = json.loads(raw.stdout)
        assert (answer["Username"], answer["Secret"]) == ("", "")
    else:
        assert raw.stdout.strip() == "credentials not found in native keychain"
    c = store.config("store", {"credsStore": "pass"})
    assert await c.entry_for_registry("unknown.example.test") == ConfigEntry()


@pytest.mark.parametrize("host", ["docker.io", "index.docker.io", "registry-1.docker.io"])
async def test_docker_hub_through_the_real_helper(store: PassStore, host: str) -> None:
    c = store.config("store", {"credsStore": "pass"})
    assert await c.entry_for_registry(host) == ConfigEntry(
        username="hubuser", password="hub-s3cret"
    )


async def test_a_token_stored_by_the_real_helper(store: PassStore) -> None:
    c = store.config("helpers", {"credHelpers": {"acr.example.test": "pass"}})
    assert await c.entry_for_registry("acr.example.test") == ConfigEntry(
        refresh_token="identity-token"
    )


async def test_the_runner_directly(store: PassStore) -> None:
    run = exec_helper_with_env(store.env)
    assert await run("pass", "reg.example.test") == ConfigEntry(username="alice", password="s3cret")


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_docker_auth_config_wins_over_the_real_store(store: PassStore) -> None:
    """A CI job's DOCKER_AUTH_CONFIG on a machine whose config.json names a store:
    the environment answers for its registries (docker/cli asks it first), the
    store for the others."""
    inline = json.dumps({"auths": {"reg.example.test": {"auth": _auth("ci", "ci-token")}}})
    c = store.config("store", {"credsStore": "pass"}, DOCKER_AUTH_CONFIG=inline)
    assert await c.resolve("reg.example.test") == Resolution(
        ConfigEntry(username="ci", password="ci-token"),
        "DOCKER_AUTH_CONFIG",
        "reg.example.test",
        None,
        "auths",
    )
    hub = await c.resolve("docker.io")
    assert (hub.entry.username, hub.kind, hub.helper) == ("hubuser", "credsStore", "pass")


async def test_the_real_stores_not_found_passes_the_question_on(store: PassStore) -> None:
    """The store in an earlier source has nothing for the registry: a later source answers."""
    inline = json.dumps({"credsStore": "pass"})
    c = store.config(
        "later",
        {"auths": {"unknown.example.test": {"auth": _auth("file", "pw")}}},
        DOCKER_AUTH_CONFIG=inline,
    )
    resolution = await c.resolve("unknown.example.test")
    assert resolution.entry == ConfigEntry(username="file", password="pw")
    assert resolution.source == str(store.root / "later" / "config.json")


async def test_listing_what_the_real_store_holds(store: PassStore) -> None:
    """``docker-credential-pass list`` names the servers; each is asked once and shown."""
    c = store.config(
        "store",
        {"credsStore": "pass", "auths": {"reg.example.test": {}, "plain.test": {"username": "p"}}},
    )
    listing = await c.stored_credentials()
    source = str(store.root / "store" / "config.json")
    shown = [
        (p.registry, p.found.kind, p.found.helper, p.found.source, p.found.entry, p.used_instead)
        for p in listing
    ]
    assert shown[:3] == [
        (
            "acr.example.test",
            "credsStore",
            "pass",
            source,
            ConfigEntry(refresh_token="identity-token"),
            None,
        ),
        (
            "docker.io",
            "credsStore",
            "pass",
            source,
            ConfigEntry(username="hubuser", password="hub-s3cret"),
            None,
        ),
        (
            "reg.example.test",
            "credsStore",
            "pass",
            source,
            ConfigEntry(username="alice", password="s3cret"),
            None,
        ),
    ]
    # The file's own entry is never used: the store answers (with nothing) first.
    [plain] = listing[3:]
    assert (plain.registry, plain.found.kind, plain.found.key) == (
        "plain.test",
        "auths",
        "plain.test",
    )
    assert plain.used_instead is not None
    assert (plain.used_instead.kind, plain.used_instead.helper) == ("credsStore", "pass")


async def test_podmans_file_and_its_helper_come_before_dockers_file(store: PassStore) -> None:
    """$XDG_RUNTIME_DIR/containers/auth.json names the real helper for the registry;
    docker's config.json has other credentials for it: podman's file answers first,
    as containers/image reads it first."""
    runtime = store.root / "runtime"
    (runtime / "containers").mkdir(parents=True, exist_ok=True)
    (runtime / "containers" / "auth.json").write_text(
        json.dumps({"credHelpers": {"reg.example.test": "pass"}})
    )
    c = store.config(
        "docker-after-podman",
        {"auths": {"reg.example.test": {"auth": _auth("docker", "pw")}}},
        XDG_RUNTIME_DIR=str(runtime),
    )
    resolution = await c.resolve("reg.example.test")
    assert resolution.entry == ConfigEntry(username="alice", password="s3cret")
    assert resolution.source == str(runtime / "containers" / "auth.json")
    assert (resolution.kind, resolution.helper) == ("credHelpers", "pass")
