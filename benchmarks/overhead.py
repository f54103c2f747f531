"""Warm-cache overhead: what the middleware costs once every token is cached.

The stub registry runs in a separate process, so ``time.process_time()``
deltas in this process are the client's CPU alone. Each variant keeps its
session (and so its keep-alive connections) for the whole run; the variants
take turns, round after round, in a rotating order, and the medians over
rounds are reported.
"""

from __future__ import annotations

import asyncio

import aiohttp

import aociauth

from ._common import Measured, Report, StubServer, Table, median, run_async, timed, us

NAME = "overhead"
TITLE = "Warm-cache overhead"

CONCURRENCY = 16
REPOSITORY = "bench/app"


async def _round(
    session: aiohttp.ClientSession, url: str, n: int, headers: dict[str, str] | None
) -> Measured:
    per_worker = n // CONCURRENCY

    async def worker() -> None:
        for _ in range(per_worker):
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"stub answered {resp.status}")

    async def all_workers() -> None:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    return await timed(all_workers)


async def _main(quick: bool) -> Report:
    rounds, n = (5, 2000) if quick else (15, 5000)
    n -= n % CONCURRENCY
    report = Report(NAME, TITLE)
    with StubServer() as stub:
        url = f"{stub.url}/v2/{REPOSITORY}/manifests/latest"
        fixed = {"Authorization": "Bearer a-fixed-token-the-stub-accepts"}
        mw_new = aociauth.new_std_transport(aociauth.StdTransportParams())
        mw_orig = aociauth.new_std_transport(aociauth.StdTransportParams.original_policy())
        variants: list[tuple[str, aiohttp.ClientSession, dict[str, str] | None, object]] = [
            ("aiohttp, fixed Authorization header", aiohttp.ClientSession(), fixed, None),
            ("aociauth (defaults)", aiohttp.ClientSession(middlewares=[mw_new]), None, mw_new),
            (
                "aociauth (original policy)",
                aiohttp.ClientSession(middlewares=[mw_orig]),
                None,
                mw_orig,
            ),
        ]
        results: dict[str, list[Measured]] = {name: [] for name, *_ in variants}
        try:
            # Warm up: the middlewares learn the challenge and cache a token; pools fill.
            for _, session, headers, _mw in variants:
                await _round(session, url, CONCURRENCY * 20, headers)
            for i in range(rounds):
                order = variants[i % len(variants) :] + variants[: i % len(variants)]
                for name, session, headers, _mw in order:
                    results[name].append(await _round(session, url, n, headers))
        finally:
            for _, session, *_ in variants:
                await session.close()
            await mw_new.close()
            await mw_orig.close()

    base_cpu = median([m.cpu / n for m in results[variants[0][0]]])
    table = Table(
        f"{n} GETs a round, {CONCURRENCY} at a time, {rounds} rounds; medians (min-max)",
        ["variant", "req/s", "CPU us/req", "CPU range", "extra CPU us/req", "token requests"],
    )
    for name, _session, _headers, mw in variants:
        ms_ = results[name]
        rps = median([n / m.wall for m in ms_])
        cpus = [m.cpu / n for m in ms_]
        cpu = median(cpus)
        tokens = mw.stats.total_token_requests if isinstance(mw, aociauth.AuthMiddleware) else 0
        table.add(
            name,
            f"{rps:,.0f}",
            us(cpu),
            f"{us(min(cpus))}-{us(max(cpus))}",
            "-" if mw is None else f"{(cpu - base_cpu) * 1e6:+.1f}",
            tokens,
        )
    report.tables.append(table)
    report.notes.append(
        "Client CPU only: the stub registry runs in its own process. req/s is bounded "
        "by that single-process server on a 2-core machine; CPU per request is the figure "
        "that shows the middleware's cost."
    )
    return report


def run(quick: bool) -> Report:
    """Measure the overhead; ``quick`` runs fewer, shorter rounds."""
    result: Report = run_async(_main(quick))
    return result
