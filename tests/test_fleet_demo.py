"""``aociauth demo --fleet N [--redis URL]``: real worker processes, alone and sharing.

Run as users run it (``python -m aociauth``); the figures are checked against
each other and against what a fleet must do: alone, every process fetches every
token; sharing, the fleet fetches each about once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from aociauth.testing.redis import RedisServer, find_redis_server

pytest.importorskip("redis", reason="the fleet demo needs redis-py (extra redis)")
pytest.importorskip("cryptography", reason="the demo's token server signs with it")

needs_redis = pytest.mark.skipif(
    find_redis_server() is None,
    reason="redis-server is not on PATH: apt-get install redis-server",
)

REPOS = 6
#: Token requests a cold worker makes for its REPOS pulls: they miss at once and share
#: one token request (coalesce_token_requests), so what Redis saves is counted in those.
ASKS = 1


async def demo(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aociauth",
        "demo",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def fleet_args(processes: int = 2) -> list[str]:
    return ["--fleet", str(processes), "--repos", str(REPOS), "--latency-ms", "0"]


def check_alone(run: dict[str, Any], processes: int) -> None:
    assert run["pulled"] == processes * REPOS
    assert run["failed"] == 0
    # Alone, each cold process asks for every repository's token (in one request).
    assert run["token_server_requests"] == processes * ASKS
    assert run["token_requests"] == run["token_server_requests"]
    assert run["shared_hits"] == 0


@needs_redis
async def test_a_fleet_shares_through_a_redis_server_it_starts() -> None:
    code, out, err = await demo(*fleet_args(3), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["redis"].startswith("a redis-server started for the demo at 127.0.0.1:")
    check_alone(data["runs"]["alone"], 3)
    shared = data["runs"]["shared"]
    assert shared["pulled"] == 3 * REPOS
    assert shared["failed"] == 0
    assert shared["store"]["errors"] == 0
    # One process's token requests for the whole fleet; the others' came from Redis.
    assert shared["token_server_requests"] == ASKS
    assert shared["token_requests"] == ASKS
    assert shared["shared_hits"] == 2 * ASKS
    assert shared["store"]["writes"] == ASKS


@needs_redis
async def test_a_fleet_shares_through_the_redis_it_is_given_and_hides_its_password() -> None:
    password = "redis-password-for-the-demo"
    async with RedisServer(password=password) as server:
        code, out, err = await demo(*fleet_args(), "--redis", server.url)
        assert code == 0, err
        keys = (await server.command("AUTH", password), await server.command("DBSIZE"))
    assert f"the Redis at {server.host}" in out
    assert f"asked the token server {ASKS} times instead of {2 * ASKS}" in out
    assert f"{ASKS} requests saved (50%)" in out
    assert password not in out + err
    assert keys[1] != b":0\r\n"  # the tokens really went to that Redis


async def test_without_redis_the_demo_says_what_it_would_save(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no redis-server to be found
    code, out, err = await demo(*fleet_args(), env=env)
    assert code == 0, err
    assert "each process alone" in out
    assert "sharing tokens" not in out
    assert f"token requests{' ' * 2}" in out
    assert f"{2 * ASKS} requests" in out
    assert f"saving about {ASKS}" in out
    assert "apt-get install redis-server" in out
    assert "--redis" in out


@pytest.mark.parametrize(
    "args",
    [
        ["--fleet", "0"],
        ["--redis", "redis://127.0.0.1:6379/0"],
        ["--fleet", "2", "--compare"],
    ],
)
async def test_fleet_options_that_make_no_sense_are_refused(args: list[str]) -> None:
    code, out, err = await demo(*args)
    assert code == 2
    assert err.startswith("aociauth: error: ")
    assert out == ""
