"""Warm-cache overhead: what the middleware costs once every token is cached.

Three ways to send the same GETs, in the same run: bare aiohttp (the fixed
``Authorization`` header passed with each request), a trivial aiohttp
middleware that only sets that fixed header, and aociauth with its defaults.
Each is measured with one repository and with requests spread over 4,000
distinct repositories (a token cached for each). The stub registry runs in a
separate process, pinned to another CPU than this one where there are two, so
``time.process_time()`` deltas in this process are the client's CPU alone.
Each variant keeps its session (and keep-alive connections) and its place in
the repositories for the whole run. The variants take turns in short rounds, in
a rotating order: a shared machine's speed drifts by tens of percent over
seconds, and the three rounds of one turn see the same drift, so each turn
gives a ratio to the trivial middleware, and the median of those ratios (with
a bootstrap 95 % interval) is the result. The target: aociauth costs at most
1.05 times the client CPU of the trivial middleware.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

import aiohttp

import aociauth

from ._common import Measured, Report, StubServer, Table, median, run_async, timed, us

NAME = "overhead"
TITLE = "Warm-cache overhead: bare aiohttp, a trivial middleware, aociauth"

CONCURRENCY = 16
FIXED = "Bearer a-fixed-token-the-stub-accepts"


async def fixed_header(
    req: aiohttp.ClientRequest,
    handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
) -> aiohttp.ClientResponse:
    """The least an auth middleware can do: set one fixed header."""
    req.headers[aiohttp.hdrs.AUTHORIZATION] = FIXED
    return await handler(req)


async def _round(
    session: aiohttp.ClientSession, urls: Iterator[str], n: int, headers: dict[str, str] | None
) -> Measured:
    per_worker = n // CONCURRENCY

    async def worker() -> None:
        for _ in range(per_worker):
            async with session.get(next(urls), headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"stub answered {resp.status}")

    async def all_workers() -> None:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    return await timed(all_workers)


Variant = tuple[
    str, aiohttp.ClientSession, "dict[str, str] | None", "aociauth.AuthMiddleware | None"
]


def interval(ratios: Sequence[float], draws: int = 2000) -> tuple[float, float]:
    """A bootstrap 95 % interval of the median of ``ratios`` (seeded: it repeats)."""
    rng = random.Random(0)
    medians = sorted(median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


def _steal_ticks() -> int | None:
    """CPU time the hypervisor gave to others (``/proc/stat``), in clock ticks."""
    try:
        with open("/proc/stat") as f:
            return int(f.readline().split()[8])
    except (OSError, IndexError, ValueError):
        return None


async def _workload(stub_url: str, repos: int, rounds: int, n: int) -> Table:
    urls = [f"{stub_url}/v2/bench/app{i}/manifests/latest" for i in range(repos)]
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(cache_size=2 * repos + 16))
    variants: list[Variant] = [
        ("bare aiohttp, fixed header", aiohttp.ClientSession(), {"Authorization": FIXED}, None),
        ("trivial middleware", aiohttp.ClientSession(middlewares=[fixed_header]), None, None),
        ("aociauth (defaults)", aiohttp.ClientSession(middlewares=[mw]), None, mw),
    ]
    # Each variant goes on through the repositories from where its last round stopped.
    places = {name: itertools.cycle(urls) for name, *_ in variants}
    results: dict[str, list[Measured]] = {name: [] for name, *_ in variants}
    try:
        # Warm up: aociauth learns the challenge and caches a token per repository.
        for name, session, headers, _mw in variants:
            await _round(session, places[name], max(2 * len(urls), CONCURRENCY * 20), headers)
        tokens_before = mw.stats.total_token_requests
        steal0, wall0 = _steal_ticks(), time.monotonic()
        for i in range(rounds):
            order = variants[i % len(variants) :] + variants[: i % len(variants)]
            for name, session, headers, _mw in order:
                results[name].append(await _round(session, places[name], n, headers))
        steal1, wall1 = _steal_ticks(), time.monotonic()
        fetched = mw.stats.total_token_requests - tokens_before
    finally:
        for _, session, *_ in variants:
            await session.close()
        await mw.close()
    trivial = [m.cpu for m in results["trivial middleware"]]
    table = Table(
        f"{repos:,} repositor{'y' if repos == 1 else 'ies'}: {rounds} turns of {n} GETs "
        f"per variant, {CONCURRENCY} at a time",
        ["variant", "req/s", "CPU us/req", "CPU middle half", "x trivial", "95 % interval"],
    )
    for name, *_ in variants:
        cpus = sorted(m.cpu / n for m in results[name])
        ratios = [m.cpu / t for m, t in zip(results[name], trivial, strict=True)]
        low, high = interval(ratios)
        table.add(
            name,
            f"{median([n / m.wall for m in results[name]]):,.0f}",
            us(median(cpus)),
            f"{us(cpus[len(cpus) // 4])}-{us(cpus[3 * len(cpus) // 4])}",
            f"{median(ratios):.3f}",
            f"{low:.3f}-{high:.3f}",
        )
    table.add("token requests during the rounds", "", "", "", str(fetched), "")
    if steal0 is not None and steal1 is not None:
        tick = os.sysconf("SC_CLK_TCK")
        share = (steal1 - steal0) / tick / (wall1 - wall0)
        table.add("CPU the host took (steal), of one CPU", "", "", "", f"{share:.1%}", "")
    return table


def _pin(stub: StubServer) -> str:
    """This process on one CPU, the stub on another: no migrations, no sharing a core."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return "not pinned (one CPU)"
    os.sched_setaffinity(0, {cpus[0]})
    os.sched_setaffinity(stub.pid, {cpus[1]})
    return f"client on CPU {cpus[0]}, stub registry on CPU {cpus[1]}"


async def _main(quick: bool) -> Report:
    rounds, n = (40, 320) if quick else (150, 320)
    n -= n % CONCURRENCY
    report = Report(NAME, TITLE)
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        with StubServer() as stub:
            pinned = _pin(stub)
            for repos in (1, 4000):
                report.tables.append(await _workload(stub.url, repos, rounds, n))
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
    report.notes.append(
        "Client CPU only: the stub registry runs in its own process "
        f"({pinned}). 'x trivial' is the median over turns of each variant's CPU over the "
        "trivial middleware's in the same turn, with a bootstrap 95 % interval of that "
        "median; the target for aociauth is 1.05 or less."
    )
    return report


def run(quick: bool) -> Report:
    """Measure the overhead; ``quick`` runs fewer, shorter rounds."""
    result: Report = run_async(_main(quick))
    return result
