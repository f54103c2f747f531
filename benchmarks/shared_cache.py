"""The shared token cache on Redis: what a lookup costs, and how many fetches a fleet makes.

Two measurements against a real ``redis-server`` on loopback (Debian's,
started by :class:`aociauth.testing.redis.RedisServer`, persistence off).
The store alone: ``get`` (hit and miss) and ``put`` latency one at a time,
and ``get`` throughput 16 at a time. And a cold fleet: N processes, each with
its own event loop and store, all released at once, each asking for the same
20 scopes; a fake token fetch sleeps 50 ms and counts itself with a Redis
``INCR``. Without the fetch lock (look, fetch on a miss, write back) every
process fetches every scope; through :func:`aociauth.shared_cache.shared_fetch`
about one fetch per scope is made for the whole fleet.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aociauth.scope import Scope, parse_scope
from aociauth.shared_cache import SharedIdentity, SharedToken, shared_fetch

from ._common import Report, Table, median, ms, run_async, us

NAME = "shared-cache"
TITLE = "Shared token cache on Redis"

#: Not random: spawned processes import this module afresh, and must share the key.
KEY = bytes(range(32))
IDENTITY = SharedIdentity("registry.example", "bench", "bench-password")
REALM = "https://registry.example/token"
SCOPES = 20
FETCH_SECONDS = 0.05
CONCURRENCY = 16


def _scope(i: int) -> Scope:
    return parse_scope(f"repository:bench/r{i:05d}:pull")


def _token(scope: Scope) -> SharedToken:
    now = time.time()
    return SharedToken(f"tok-{secrets.token_urlsafe(600)}", scope, now + 600, now)


async def _per_call(call: Callable[[int], Awaitable[Any]], count: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call; CPU is this process's alone, so Redis's is not in it."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        await call(i)
    return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count


async def _store_table(url: str, quick: bool) -> Table:
    from aociauth.redis import RedisTokenStore

    count = 500 if quick else 3_000
    rounds = 3 if quick else 5
    table = Table(
        f"One store against redis-server on loopback (tokens of about 800 bytes; "
        f"{count} calls a round, medians of {rounds} rounds)",
        ["operation", "us/call", "client CPU us/call", "calls/s"],
    )
    store = RedisTokenStore.from_url(url, key=KEY, timeout=1.0, prefix=f"b{secrets.token_hex(4)}")
    try:
        tokens = [_token(_scope(i)) for i in range(count)]
        puts = [await _per_call(lambda i: store.put(IDENTITY, REALM, tokens[i]), count)]
        results: dict[str, list[tuple[float, float]]] = {
            "put": puts,
            "get (hit)": [],
            "get (miss)": [],
        }
        for _ in range(rounds - 1):
            results["put"].append(
                await _per_call(lambda i: store.put(IDENTITY, REALM, tokens[i]), count)
            )
        for _ in range(rounds):
            results["get (hit)"].append(
                await _per_call(lambda i: store.get(IDENTITY, REALM, _scope(i)), count)
            )
            results["get (miss)"].append(
                await _per_call(lambda i: store.get(IDENTITY, REALM, _scope(count + i)), count)
            )
        for label, values in results.items():
            per = median([wall for wall, _ in values])
            cpu = median([cpu for _, cpu in values])
            table.add(label, us(per), us(cpu), f"{1 / per:,.0f}")
        concurrent: list[float] = []
        for _ in range(rounds):
            started = time.perf_counter()

            async def worker(offset: int) -> None:
                for i in range(offset, count, CONCURRENCY):
                    await store.get(IDENTITY, REALM, _scope(i))

            await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
            concurrent.append(count / (time.perf_counter() - started))
        table.add(f"get (hit), {CONCURRENCY} at a time", "", "", f"{median(concurrent):,.0f}")
        if store.stats.errors:
            table.title += f" [{store.stats.errors} Redis errors]"
    finally:
        await store.aclose()
    return table


def _fleet_process(url: str, prefix: str, use_lock: bool, ready: Any, go: Any, out: Any) -> None:
    """One process of the fleet: its own loop and store, the same 20 scopes as the others."""
    from redis.asyncio import Redis

    from aociauth.redis import RedisTokenStore

    async def main() -> float:
        store = RedisTokenStore.from_url(url, key=KEY, timeout=2.0, prefix=prefix)
        counter = Redis.from_url(url)

        def fetcher(scope: Scope) -> Callable[[], Awaitable[SharedToken]]:
            async def fetch() -> SharedToken:
                await counter.incr(f"{prefix}:fetches")
                await asyncio.sleep(FETCH_SECONDS)
                return _token(scope)

            return fetch

        async def one(scope: Scope) -> None:
            if use_lock:
                await shared_fetch(store, IDENTITY, REALM, scope, fetcher(scope))
            elif await store.get(IDENTITY, REALM, scope) is None:
                await store.put(IDENTITY, REALM, await fetcher(scope)())

        await counter.ping()
        await store.get(IDENTITY, REALM, _scope(-1))  # connected before the start
        ready.set()
        go.wait(60)
        started = time.perf_counter()
        await asyncio.gather(*(one(_scope(i)) for i in range(SCOPES)))
        elapsed = time.perf_counter() - started
        await counter.aclose()
        await store.aclose()
        return elapsed

    out.put(asyncio.run(main()))


def _fleet(url: str, processes: int, use_lock: bool) -> tuple[int, float]:
    """(token fetches, slowest process's seconds) for one cold fleet."""
    import redis

    prefix = f"fleet{secrets.token_hex(4)}"
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    readies = [ctx.Event() for _ in range(processes)]
    procs = [
        ctx.Process(target=_fleet_process, args=(url, prefix, use_lock, ready, go, out))
        for ready in readies
    ]
    for proc in procs:
        proc.start()
    try:
        for ready in readies:
            if not ready.wait(120):
                raise RuntimeError("a fleet process did not start within 120 s")
        go.set()
        elapsed = [out.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(30)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    client = redis.Redis.from_url(url)
    try:
        fetches = int(client.get(f"{prefix}:fetches") or 0)
    finally:
        client.close()
    return fetches, max(elapsed)


def _fleet_table(url: str, quick: bool) -> Table:
    sizes = (1, 2, 4) if quick else (1, 2, 4, 8)
    table = Table(
        f"A cold fleet: N processes each ask for the same {SCOPES} scopes at once "
        f"(a token fetch takes {FETCH_SECONDS * 1000:.0f} ms)",
        [
            "processes",
            "fetches, no lock",
            "fetches, fetch lock",
            "ideal",
            "slowest ms, no lock",
            "slowest ms, fetch lock",
        ],
    )
    for n in sizes:
        plain, plain_s = _fleet(url, n, use_lock=False)
        locked, locked_s = _fleet(url, n, use_lock=True)
        table.add(n, plain, locked, SCOPES, ms(plain_s), ms(locked_s))
    return table


async def _with_server(quick: bool) -> tuple[Table, Table]:
    from aociauth.testing.redis import RedisServer

    async with RedisServer() as server:
        store_table = await _store_table(server.url, quick)
        fleet_table = await asyncio.to_thread(_fleet_table, server.url, quick)
    return store_table, fleet_table


def run(quick: bool) -> Report:
    """Measure the store and a cold fleet; ``quick`` makes fewer calls and smaller fleets."""
    from aociauth.testing.redis import find_redis_server

    report = Report(NAME, TITLE)
    if find_redis_server() is None:
        report.notes.append(
            "skipped: redis-server is not on PATH (Debian: apt-get install redis-server)"
        )
        return report
    store_table, fleet_table = run_async(_with_server(quick))
    report.tables += [store_table, fleet_table]
    report.notes.append(
        "Every entry is sealed with AES-GCM and each lookup opens the entries of one "
        "bucket: the store's CPU is in these figures. The fleet's processes start "
        "connected and are released together; a process's time counts from its release. "
        "On a shared machine the wall-clock columns follow its load; client CPU less so."
    )
    report.notes.append(
        "With the fetch lock, a process that misses waits for the holder's write by polling "
        "the lock (5 ms, doubling to 50 ms): a waiter's time is one fetch plus up to a poll."
    )
    return report
