"""Warm-cache overhead: what the middleware costs once every token is cached.

Three ways to send the same GETs, in the same run: bare aiohttp (the fixed
``Authorization`` header passed with each request), a trivial aiohttp
middleware that only sets that fixed header, and aociauth with its defaults.
Each is measured with one repository and with requests spread over 4,000
distinct repositories (a token cached for each). The stub registry runs in a
separate process, so ``time.process_time()`` deltas in this process are the
client's CPU alone. Each variant keeps its session (and keep-alive
connections) for the whole run; the variants take turns, round after round,
in a rotating order, and the medians over rounds are reported. The target:
aociauth costs at most 1.05 times the client CPU of the trivial middleware.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

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
    session: aiohttp.ClientSession, urls: list[str], n: int, headers: dict[str, str] | None
) -> Measured:
    per_worker = n // CONCURRENCY
    cycle = itertools.cycle(urls)

    async def worker() -> None:
        for _ in range(per_worker):
            async with session.get(next(cycle), headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"stub answered {resp.status}")

    async def all_workers() -> None:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    return await timed(all_workers)


Variant = tuple[
    str, aiohttp.ClientSession, "dict[str, str] | None", "aociauth.AuthMiddleware | None"
]


async def _workload(stub_url: str, repos: int, rounds: int, n: int) -> Table:
    urls = [f"{stub_url}/v2/bench/app{i}/manifests/latest" for i in range(repos)]
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(cache_size=2 * repos + 16))
    variants: list[Variant] = [
        ("bare aiohttp, fixed header", aiohttp.ClientSession(), {"Authorization": FIXED}, None),
        ("trivial middleware", aiohttp.ClientSession(middlewares=[fixed_header]), None, None),
        ("aociauth (defaults)", aiohttp.ClientSession(middlewares=[mw]), None, mw),
    ]
    results: dict[str, list[Measured]] = {name: [] for name, *_ in variants}
    try:
        # Warm up: aociauth learns the challenge and caches a token per repository.
        for _, session, headers, _mw in variants:
            await _round(session, urls, max(len(urls), CONCURRENCY * 20), headers)
        tokens_before = mw.stats.total_token_requests
        for i in range(rounds):
            order = variants[i % len(variants) :] + variants[: i % len(variants)]
            for name, session, headers, _mw in order:
                results[name].append(await _round(session, urls, n, headers))
        fetched = mw.stats.total_token_requests - tokens_before
    finally:
        for _, session, *_ in variants:
            await session.close()
        await mw.close()
    trivial = median([m.cpu / n for m in results["trivial middleware"]])
    table = Table(
        f"{repos:,} repositor{'y' if repos == 1 else 'ies'}: {n} GETs a round, "
        f"{CONCURRENCY} at a time, {rounds} rounds; medians",
        ["variant", "req/s", "CPU us/req", "CPU range", "x trivial middleware"],
    )
    for name, *_ in variants:
        cpus = [m.cpu / n for m in results[name]]
        cpu = median(cpus)
        table.add(
            name,
            f"{median([n / m.wall for m in results[name]]):,.0f}",
            us(cpu),
            f"{us(min(cpus))}-{us(max(cpus))}",
            f"{cpu / trivial:.3f}",
        )
    table.add("token requests during the rounds", "", "", "", str(fetched))
    return table


async def _main(quick: bool) -> Report:
    rounds, n = (5, 2000) if quick else (15, 4000)
    n -= n % CONCURRENCY
    report = Report(NAME, TITLE)
    with StubServer() as stub:
        for repos in (1, 4000):
            report.tables.append(await _workload(stub.url, repos, rounds, n))
    report.notes.append(
        "Client CPU only: the stub registry runs in its own process. The last column is "
        "each variant's median CPU per request over the trivial middleware's; the target "
        "for aociauth is 1.05 or less."
    )
    return report


def run(quick: bool) -> Report:
    """Measure the overhead; ``quick`` runs fewer, shorter rounds."""
    result: Report = run_async(_main(quick))
    return result
