"""Every script in examples/ runs, as a user runs it, and prints what it promises.

Each example starts its own registry and token server on loopback; the lines
checked here are the counters it prints, so a change in behaviour shows up
as a failing example, not just a stale README.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd or EXAMPLES.parent,
        env=env,
        check=False,
    )


def run_example(name: str) -> list[str]:
    proc = run(str(EXAMPLES / name))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout.splitlines()


def test_every_example_is_checked_here() -> None:
    checked = {
        "pull_many.py",
        "push_with_mount.py",
        "batch_scope.py",
        "custom_config.py",
        "test_with_toolkit.py",
        "pull_with_httpx.py",
        "observability.py",  # checked in test_otel.py
    }
    assert {p.name for p in EXAMPLES.glob("*.py")} == checked


def test_pull_many_meets_one_401_and_asks_each_repositorys_scope_once() -> None:
    lines = run_example("pull_many.py")
    assert "pulled 50 images, 16 at a time" in lines
    assert "requests sent: 100" in lines
    assert "401 responses: 1" in lines
    counted = {
        name: int(value)
        for name, _, value in (line.rpartition(": ") for line in lines)
        if name in ("token requests", "scopes asked in another repository's token request")
    }
    tokens = counted["token requests"]
    # How the 16 pulls at a time interleave decides how many misses meet (8 here):
    # at most 16 can share a request, and every scope is asked exactly once.
    assert 50 / 16 <= tokens < 50
    assert tokens + counted["scopes asked in another repository's token request"] == 50
    assert f"token server saw: {tokens} requests" in lines


def test_pull_with_httpx_counts_what_the_middleware_counts() -> None:
    lines = run_example("pull_with_httpx.py")
    assert "pulled 20 images with httpx" in lines
    assert "requests sent: 40" in lines
    assert "401 responses: 1" in lines
    # The 19 requests held behind the first contact ride in its token request.
    assert "token requests: 1" in lines
    assert "token server saw: 1 requests" in lines


def test_push_with_mount_mounts_instead_of_uploading() -> None:
    lines = run_example("push_with_mount.py")
    assert "mount of the layer into team/app from team/base: 201" in lines
    assert "team/app holds the layer: True" in lines
    assert "401 responses: 1" in lines
    assert "token requests: 2" in lines
    # The mount's token asks for push on the target and pull on the source.
    assert "  token asked for: repository:team/app:pull,push repository:team/base:pull" in lines


def test_batch_scope_fetches_one_token_for_the_batch() -> None:
    lines = run_example("batch_scope.py")
    assert "without with_scope: 10 token requests" in lines
    assert "with_scope of 10 repositories: 1 token request(s) for 10 requests" in lines
    assert "the one token was asked for 10 scope item(s)" in lines


def test_custom_config_is_asked_once_per_registry() -> None:
    lines = run_example("custom_config.py")
    assert "statuses: [(200, 10)]" in lines
    assert "token server issued tokens to: ['ci-bot']" in lines
    assert "config lookups by the middleware: 2" in lines
    lookups = next(line for line in lines if line.startswith("vault lookups per registry"))
    assert re.fullmatch(r"vault lookups per registry: \{'[^']+': 1, '[^']+': 1\}", lookups)
    # The entry's repr shows the user, never the password.
    assert any("username='ci-bot', password=<set>" in line for line in lines)
    assert not any("vault-secret" in line for line in lines)


def test_the_toolkit_example_passes_in_a_users_project(tmp_path: Path) -> None:
    # Copied out of this repository, so that none of its pytest configuration
    # applies: the plugin must work in a user's project as installed.
    shutil.copy(EXAMPLES / "test_with_toolkit.py", tmp_path)
    proc = run(
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "test_with_toolkit.py",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.match(r"\d+ passed", summary), summary
    assert "failed" not in summary
    assert "skipped" not in summary


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_examples_touch_nothing_but_loopback(name: str) -> None:
    # Each example brings its own servers: it names no host but 127.0.0.1.
    text = (EXAMPLES / name).read_text()
    assert not re.search(r"https?://(?!127\.0\.0\.1)[a-z]", text), name


# -- the README stays true to the code ----------------------------------------------------

README = EXAMPLES.parent / "README.md"


def test_readme_quick_start_commands_are_what_ci_and_the_demo_run() -> None:
    text = README.read_text()
    test_command = "pip install -e '.[test]' && python -m pytest"
    assert f"```sh\n{test_command}\n```" in text
    ci = (EXAMPLES.parent / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test_command
    assert "```sh\npip install -e '.[demo]' && python -m aociauth demo\n```" in text


def test_readme_documents_every_transport_parameter_and_exit_code() -> None:
    from dataclasses import fields

    import aociauth
    from aociauth import cli

    text = README.read_text()
    for f in fields(aociauth.StdTransportParams):
        assert f"`{f.name}`" in text, f.name
    # The command line's page, which the README links.
    cli_page = (EXAMPLES.parent / "docs" / "cli.md").read_text()
    for name in dir(cli):
        if name.startswith("EXIT_"):
            assert f"\n| {getattr(cli, name)} | " in cli_page, name
