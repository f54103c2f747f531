"""The fake credential helper answers per host as the real ones do, and logs every run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import aociauth
from aociauth.testing.credhelper import NOT_FOUND, HelperAnswer, install_credential_helper


async def test_answers_by_host_and_logs_every_run(tmp_path: Path) -> None:
    helper = install_credential_helper(tmp_path, {"reg.test": HelperAnswer("alice", "pw")})
    config = helper.config({"reg.test:5000": helper.name, "other.test": helper.name})
    assert await config.entry_for_registry("reg.test:5000") == aociauth.ConfigEntry(
        username="alice", password="pw"
    )
    # A host the table does not name: "credentials not found", which means anonymous.
    assert await config.entry_for_registry("other.test") == aociauth.ConfigEntry()
    assert helper.runs() == [
        {"argv": ["get"], "url": "reg.test:5000"},
        {"argv": ["get"], "url": "other.test"},
    ]
    assert NOT_FOUND.exit_code == 1


async def test_a_changed_answer_holds_from_the_next_run_and_token_means_refresh(
    tmp_path: Path,
) -> None:
    helper = install_credential_helper(tmp_path, {}, name="other")
    assert (tmp_path / "bin" / "docker-credential-other").exists()
    helper.set_answer("token.test", HelperAnswer("<token>", "refresh-1"))
    entry = await helper.config({"token.test": "other"}).entry_for_registry("token.test")
    assert entry == aociauth.ConfigEntry(refresh_token="refresh-1")


async def test_failures_noise_and_hangs(tmp_path: Path) -> None:
    answers = {
        "fail.test": HelperAnswer("a", "s", stderr="the keychain is locked\n", exit_code=3),
        "noise.test": HelperAnswer(stdout="WARNING\n" + json.dumps({"Username": "a"})),
        "hang.test": HelperAnswer(hang=True),
    }
    helper = install_credential_helper(tmp_path, answers)
    config = helper.config({h: helper.name for h in answers}, timeout=0.5)
    with pytest.raises(aociauth.HelperError, match="the keychain is locked"):
        await config.entry_for_registry("fail.test")
    with pytest.raises(aociauth.HelperError):
        await config.entry_for_registry("noise.test")
    with pytest.raises(aociauth.HelperTimeoutError):
        await config.entry_for_registry("hang.test")


async def test_a_gated_answer_waits_for_the_gate(tmp_path: Path) -> None:
    helper = install_credential_helper(
        tmp_path, {"gate.test": HelperAnswer("alice", "pw", wait_for_gate=True)}
    )
    lookup = asyncio.ensure_future(
        helper.config({"gate.test": helper.name}).entry_for_registry("gate.test")
    )
    while not helper.runs():  # the helper has started and logged its run
        await asyncio.sleep(0.01)
    assert not lookup.done()
    helper.open_gate()
    entry = await asyncio.wait_for(lookup, 20)
    assert entry.username == "alice"
