"""ConfigFile.reload_if_changed: the files read again when one changed on disk."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from aociauth import ConfigEntry, ConfigFile, load_with_env

ALICE = ConfigEntry(username="alice", password="pw-1")


def env_for(root: Path) -> dict[str, str]:
    return {
        "HOME": str(root),
        "DOCKER_CONFIG": str(root / "docker"),
        "XDG_RUNTIME_DIR": str(root / "run"),
        "XDG_CONFIG_HOME": str(root / "xdg"),
        "PATH": os.defpath,
    }


def write(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document) if not isinstance(document, str) else document)
    tmp.replace(path)


def auths(password: str) -> dict[str, object]:
    return {"auths": {"r.test": {"username": "alice", "password": password}}}


async def test_a_rewritten_file_is_read_again_once(tmp_path: Path) -> None:
    config_json = tmp_path / "docker" / "config.json"
    write(config_json, auths("pw-1"))
    config = load_with_env(env=env_for(tmp_path))
    assert config.reload_if_changed() is False
    assert await config.entry_for_registry("r.test") == ALICE
    write(config_json, auths("pw-2"))
    assert config.reload_if_changed() is True
    assert config.reload_if_changed() is False
    assert await config.entry_for_registry("r.test") == ConfigEntry(
        username="alice", password="pw-2"
    )


async def test_a_file_that_appears_or_goes_counts_as_a_change(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    config = load_with_env(env=env)
    assert config.sources == ()
    podman = tmp_path / "run" / "containers" / "auth.json"
    write(podman, auths("pw-1"))
    assert config.reload_if_changed() is True
    assert config.sources == (str(podman),)
    assert await config.entry_for_registry("r.test") == ALICE
    podman.unlink()
    assert config.reload_if_changed() is True
    assert await config.entry_for_registry("r.test") == ConfigEntry()


async def test_a_half_written_file_keeps_the_configuration_until_it_is_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_json = tmp_path / "docker" / "config.json"
    write(config_json, auths("pw-1"))
    config = load_with_env(env=env_for(tmp_path))
    write(config_json, '{"auths": {"r.test": {"username": "al')
    with caplog.at_level(logging.WARNING, logger="aociauth"):
        assert config.reload_if_changed() is False
    assert "cannot be read again" in caplog.text
    assert str(config_json) in caplog.text
    assert await config.entry_for_registry("r.test") == ALICE
    write(config_json, auths("pw-2"))
    assert config.reload_if_changed() is True
    assert (await config.entry_for_registry("r.test")).password == "pw-2"


def test_a_configuration_not_read_from_files_never_changes(tmp_path: Path) -> None:
    assert ConfigFile().reload_if_changed() is False
    assert ConfigFile.from_dict(auths("pw-1")).reload_if_changed() is False
    inline = {**env_for(tmp_path), "DOCKER_AUTH_CONFIG": json.dumps(auths("pw-1"))}
    config = load_with_env(env=inline)
    assert config.sources == ("DOCKER_AUTH_CONFIG",)
    assert config.reload_if_changed() is False


async def test_the_environment_is_the_one_loaded_with(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    write(tmp_path / "docker" / "config.json", auths("pw-1"))
    config = load_with_env(env=env)
    env["DOCKER_CONFIG"] = str(tmp_path / "elsewhere")
    write(tmp_path / "elsewhere" / "config.json", auths("pw-2"))
    assert config.reload_if_changed() is False
    assert await config.entry_for_registry("r.test") == ALICE
