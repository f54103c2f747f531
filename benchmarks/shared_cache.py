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

Then the tier wired into the real middleware: cold fleets of 1, 2, 4 and 8 OS
processes (``aociauth demo --fleet``'s workers) pulling the manifests of the
same 100 repositories from the in-process registry, alone and sharing; the
warm path's client CPU with and without the tier (and the Redis commands it
runs: none); and a cold burst while Redis is healthy, killed mid-burst, or
stalled (every request must succeed, the added time stay bounded).
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


MIDDLEWARE_REPOS = 100
FLEET_SIZES = (1, 2, 4, 8)
TOKEN_LATENCY_MS = 20.0


async def _middleware_fleet_table(url: str) -> Table:
    """Cold fleets of real middlewares in OS processes, alone and sharing through ``url``."""
    from aociauth.fleet_demo import FleetOptions, run_fleet_demo

    table = Table(
        f"A cold fleet through the real middleware: N processes each pull the manifests of "
        f"the same {MIDDLEWARE_REPOS} repositories, 16 at a time "
        f"(a token request takes {TOKEN_LATENCY_MS:.0f} ms)",
        [
            "processes",
            "token requests, alone",
            "token requests, shared tier",
            "from Redis",
            "slowest ms, alone",
            "slowest ms, shared tier",
            "failed",
        ],
    )
    for n in FLEET_SIZES:
        options = FleetOptions(
            processes=n,
            repos=MIDDLEWARE_REPOS,
            concurrency=16,
            latency_ms=TOKEN_LATENCY_MS,
            redis_url=url,
        )
        alone, shared = (await run_fleet_demo(options)).runs
        table.add(
            n,
            alone.token_server_requests,
            shared.token_server_requests,
            shared.shared_hits,
            ms(alone.wall_time_s),
            ms(shared.wall_time_s),
            alone.failed + shared.failed,
        )
    return table


async def _warm_table(url: str, quick: bool) -> Table:
    """Client CPU per warm request, with and without the tier; Redis commands run meanwhile."""
    import aiohttp

    import aociauth
    from aociauth.redis import RedisTokenStore

    from ._common import StubServer, timed

    rounds, n = (5, 2000) if quick else (11, 4000)
    counter = _CommandCounter(url)
    table = Table(
        f"The warm path, {MIDDLEWARE_REPOS} repositories cached: {n} GETs a round, "
        f"{CONCURRENCY} at a time, {rounds} rounds; medians",
        ["variant", "CPU us/req", "CPU range", "Redis commands during the rounds"],
    )
    store = RedisTokenStore.from_url(url, key=KEY, prefix=f"w{secrets.token_hex(4)}")
    with StubServer() as stub:
        urls = [f"{stub.url}/v2/bench/w{i}/manifests/latest" for i in range(MIDDLEWARE_REPOS)]
        variants = {
            "no shared tier": aociauth.new_std_transport(),
            "shared tier (Redis)": aociauth.new_std_transport(
                aociauth.StdTransportParams(shared_cache=store)
            ),
        }
        sessions = {k: aiohttp.ClientSession(middlewares=[mw]) for k, mw in variants.items()}

        async def go(session: aiohttp.ClientSession, count: int) -> None:
            async def worker(offset: int) -> None:
                for i in range(offset, count, CONCURRENCY):
                    async with session.get(urls[i % len(urls)]) as resp:
                        await resp.read()
                        if resp.status != 200:
                            raise RuntimeError(f"stub answered {resp.status}")

            await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))

        cpu: dict[str, list[float]] = {k: [] for k in variants}
        commands: dict[str, int] = dict.fromkeys(variants, 0)
        try:
            for session in sessions.values():
                await go(session, len(urls) * 2)  # learn the challenge, cache every token
            for r in range(rounds):
                for name in list(variants)[r % 2 :] + list(variants)[: r % 2]:
                    before = await counter.calls()
                    measured = await timed(lambda name=name: go(sessions[name], n))  # type: ignore[misc]
                    commands[name] += await counter.calls() - before
                    cpu[name].append(measured.cpu / n)
        finally:
            for session in sessions.values():
                await session.close()
            for mw in variants.values():
                await mw.close()
            await store.aclose()
            await counter.aclose()
    for name, values in cpu.items():
        table.add(name, us(median(values)), f"{us(min(values))}-{us(max(values))}", commands[name])
    return table


class _CommandCounter:
    """Commands Redis has run (INFO commandstats), INFO itself left out."""

    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis

        self._client = Redis.from_url(url)

    async def calls(self) -> int:
        info = await self._client.info("commandstats")
        return sum(int(v["calls"]) for k, v in info.items() if k != "cmdstat_info")

    async def aclose(self) -> None:
        await self._client.aclose()


async def _fault_table(server: Any) -> Table:
    """One cold middleware, 100 repositories at once: Redis healthy, killed mid-burst, stalled."""
    import aiohttp

    import aociauth
    from aociauth.redis import RedisTokenStore

    from ._common import PASSWORD, USER, bearer_registry, password_config, pull_manifest

    table = Table(
        f"Faults: one cold middleware pulls {MIDDLEWARE_REPOS} repositories at once "
        f"(a token request takes {TOKEN_LATENCY_MS:.0f} ms; Redis call timeout 200 ms)",
        ["Redis", "requests ok", "failed", "token requests", "wall ms", "outages", "errors"],
    )
    repos = [f"fault/r{i:03d}" for i in range(MIDDLEWARE_REPOS)]
    for case in ("healthy", "killed mid-burst", "stalled (SIGSTOP)", "no shared tier"):
        async with bearer_registry(repos, token_latency=TOKEN_LATENCY_MS / 1000) as (reg, ts):
            store = RedisTokenStore.from_url(
                server.url, key=secrets.token_bytes(32), prefix=f"f{secrets.token_hex(4)}"
            )
            params = aociauth.StdTransportParams(
                config=password_config(reg.host, USER, PASSWORD),
                shared_cache=None if case == "no shared tier" else store,
            )
            ok = failed = 0

            async def one(session: aiohttp.ClientSession, repo: str) -> None:
                nonlocal ok, failed
                try:
                    await pull_manifest(session, reg.url, repo)
                    ok += 1
                except (aiohttp.ClientError, aociauth.OCIAuthError, RuntimeError):
                    failed += 1

            try:
                if case == "stalled (SIGSTOP)":
                    server.pause()
                async with (
                    aociauth.new_std_transport(params) as mw,
                    aiohttp.ClientSession(middlewares=[mw]) as session,
                ):
                    started = time.perf_counter()
                    burst = asyncio.gather(*(one(session, r) for r in repos))
                    if case == "killed mid-burst":
                        await ts.wait_for_requests(MIDDLEWARE_REPOS // 2, timeout=60)
                        await server.kill()
                    await burst
                    wall = time.perf_counter() - started
            finally:
                if case == "stalled (SIGSTOP)":
                    server.resume()
                if case == "killed mid-burst":
                    await server.start()
                await store.aclose()
            table.add(
                case,
                ok,
                failed,
                mw.stats.total_token_requests,
                ms(wall),
                store.stats.outages,
                store.stats.errors,
            )
    return table


async def _with_server(quick: bool) -> list[Table]:
    from aociauth.testing.redis import RedisServer

    async with RedisServer() as server:
        tables = [await _store_table(server.url, quick)]
        tables.append(await asyncio.to_thread(_fleet_table, server.url, quick))
        tables.append(await _middleware_fleet_table(server.url))
        tables.append(await _warm_table(server.url, quick))
        tables.append(await _fault_table(server))
    return tables


def run(quick: bool) -> Report:
    """Measure the store and a cold fleet; ``quick`` makes fewer calls and smaller fleets."""
    from aociauth.testing.redis import find_redis_server

    report = Report(NAME, TITLE)
    if find_redis_server() is None:
        report.notes.append(
            "skipped: redis-server is not on PATH (Debian: apt-get install redis-server)"
        )
        return report
    report.tables += run_async(_with_server(quick))
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
