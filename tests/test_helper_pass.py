"""The real ``docker-credential-pass`` (Debian's golang-docker-credential-helpers).

A throw-away GnuPG home with a passphrase-less key and a password store are
made for the module; credentials are stored with the helper's own ``store``
command and read back through ``load_with_env`` and the lookups, exactly as a
user's ``docker login`` with ``"credsStore": "pass"`` would leave them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from aociauth.config import (
    DOCKER_HUB_SERVER_URL,
    ConfigEntry,
    ConfigFile,
    Resolution,
    load_with_env,
)
from aociauth.helpers import exec_helper_with_env

pytestmark = pytest.mark.helper_pass

REQUIRED = ("docker-credential-pass", "pass", "gpg", "gpgconf")


class PassStore:
    """A GnuPG home and a password store that docker-credential-pass uses."""

    def __init__(self, root: Path) -> None:
        self.root = root
        gnupg = root / "gnupg"
        gnupg.mkdir(mode=0o700)
        (root / "home").mkdir()
        self.env = {
            "HOME": str(root / "home"),
            "GNUPGHOME": str(gnupg),
            "PASSWORD_STORE_DIR": str(root / "store"),
            "PATH": os.environ.get("PATH", os.defpath),
        }

    def run(self, *argv: str, stdin: str = "") -> str:
        done = subprocess.run(
            argv,
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, f"{argv[0]} failed: {done.stderr}"
        return done.stdout

    def initialise(self) -> None:
        self.run(
            "gpg",
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            "aociauth test <test@example.invalid>",
            "default",
            "default",
            "never",
        )
        listing = self.run("gpg", "--batch", "--with-colons", "--list-secret-keys")
        fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        self.run("pass", "init", fingerprint)

    def store(self, server_url: str, username: str, secret: str) -> None:
        credential = {"ServerURL": server_url, "Username": username, "Secret": secret}
        self.run("docker-credential-pass", "store", stdin=json.dumps(credential))

    def config(self, name: str, document: dict[str, object], **env: str) -> ConfigFile:
        directory = self.root / name
        directory.mkdir(exist_ok=True)
        (directory / "config.json").write_text(json.dumps(document))
        return load_with_env(env={**self.env, "DOCKER_CONFIG": str(directory), **env})

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--kill", "all"], env=self.env, capture_output=True, check=False, timeout=60
        )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PassStore]:
    missing = [name for name in REQUIRED if shutil.which(name) is None]
    if missing:
        hint = "apt-get install golang-docker-credential-helpers pass gnupg"
        pytest.skip(f"needs {', '.join(missing)}: {hint}")
    s = PassStore(tmp_path_factory.mktemp("pass"))
    try:
        s.initialise()
        s.store("reg.example.test", "alice", "s3cret")
        s.store(DOCKER_HUB_SERVER_URL, "hubuser", "hub-s3cret")
        s.store("acr.example.test", "<token>", "identity-token")
        yield s
    finally:
        s.close()


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
