"""Cache scaling: what finding a cached token costs as the cache grows.

Two measurements. The lookup itself: ``aociauth.tokens.TokenCache.get``
with 10, 1,000 and 100,000 tokens cached (one per repository), next to a
scan of a plain list of tokens, which is how the original keeps a
registry's tokens. And end to end: GETs through the middleware, every one
a cache hit, with 10, 1,000 (and, in the full run, 10,000) tokens cached,
against the stub registry in its own process so client CPU is measured alone.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable, Sequence

import aiohttp

import aociauth
from aociauth.scope import Scope
from aociauth.tokens import AccessToken, TokenCache

from ._common import Measured, Report, StubServer, Table, median, run_async, timed, us

NAME = "cache"
TITLE = "Cache scaling"

PARTITION = ("http://registry.example", "", "user")
CONCURRENCY = 16


def _scope(i: int) -> Scope:
    return aociauth.new_scope(aociauth.ResourceScope("repository", f"cache/r{i:06d}", "pull"))


NOW = 1.0  # monotonic seconds; every token here expires long after


def _indexed_get(cache: TokenCache, scope: Scope) -> AccessToken | None:
    return cache.get(PARTITION, scope, NOW)


def _linear_get(tokens: Sequence[AccessToken], scope: Scope) -> AccessToken | None:
    """The original's search: every token of the registry, in turn."""
    for tok in tokens:
        if tok.usable(NOW) and tok.scope.contains(scope):
            return tok
    return None


def _per_call(call: Callable[[Scope], object], scopes: Sequence[Scope], budget: float) -> float:
    """Seconds per call, calling over ``scopes`` again and again for about ``budget`` seconds."""
    calls = 0
    started = time.perf_counter()
    while True:
        for scope in scopes:
            call(scope)
        calls += len(scopes)
        elapsed = time.perf_counter() - started
        if elapsed >= budget:
            return elapsed / calls


def _ns(seconds: float) -> str:
    return f"{seconds * 1e9:,.0f}"


def _lookup_table(quick: bool) -> Table:
    budget = 0.2 if quick else 1.0
    rng = random.Random(1)
    table = Table(
        "One lookup (ns), hit = a cached repository's pull scope, miss = an uncached one",
        ["tokens cached", "indexed hit", "indexed miss", "list scan hit", "list scan miss"],
    )
    for n in (10, 1_000, 100_000):
        tokens = [AccessToken(f"t{i}", _scope(i), 0.0, 1e12) for i in range(n)]
        cache = TokenCache(max_entries=n)
        for tok in tokens:
            cache.put(PARTITION, tok)
        hits = [_scope(rng.randrange(n)) for _ in range(200)]
        misses = [_scope(n + i) for i in range(200)]
        # A scan of 100,000 tokens takes tens of milliseconds: fewer scopes will do.
        scan_hits, scan_misses = (hits[:20], misses[:5]) if n > 10_000 else (hits, misses)
        indexed = functools.partial(_indexed_get, cache)
        scan = functools.partial(_linear_get, tokens)
        table.add(
            f"{n:,}",
            _ns(_per_call(indexed, hits, budget)),
            _ns(_per_call(indexed, misses, budget)),
            _ns(_per_call(scan, scan_hits, budget)),
            _ns(_per_call(scan, scan_misses, budget)),
        )
    return table


async def _round(
    session: aiohttp.ClientSession, urls: Sequence[str], headers: dict[str, str] | None = None
) -> Measured:
    per_worker = len(urls) // CONCURRENCY

    async def worker(mine: Sequence[str]) -> None:
        for url in mine:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"stub answered {resp.status}")

    async def all_workers() -> None:
        await asyncio.gather(
            *(worker(urls[i * per_worker : (i + 1) * per_worker]) for i in range(CONCURRENCY))
        )

    return await timed(all_workers)


async def _end_to_end(quick: bool) -> Table:
    sizes = (10, 1_000) if quick else (10, 1_000, 10_000)
    rounds, per_round = (5, 2_000) if quick else (9, 5_000)
    rng = random.Random(2)
    table = Table(
        f"GETs through the middleware, every one a cache hit ({per_round} a round, "
        f"{CONCURRENCY} at a time, {rounds} rounds, medians)",
        [
            "tokens cached",
            "req/s",
            "CPU us/req",
            "bare aiohttp CPU us/req",
            "extra CPU us/req",
            "token requests while measuring",
        ],
    )
    fixed = {"Authorization": "Bearer a-fixed-token-the-stub-accepts"}
    with StubServer() as stub:
        fills: dict[int, tuple[aociauth.AuthMiddleware, aiohttp.ClientSession, list[str]]] = {}
        bare = aiohttp.ClientSession()
        try:
            for n in sizes:
                mw = aociauth.new_std_transport(aociauth.StdTransportParams(cache_size=n + 100))
                session = aiohttp.ClientSession(middlewares=[mw])
                urls = [f"{stub.url}/v2/cache/r{i:06d}/manifests/latest" for i in range(n)]
                fills[n] = (mw, session, urls)
                for start in range(0, n, 100):
                    await _round_fill(session, urls[start : start + 100])
            before = {n: fills[n][0].stats.total_token_requests for n in sizes}
            results: dict[int, list[Measured]] = {n: [] for n in sizes}
            controls: dict[int, list[Measured]] = {n: [] for n in sizes}
            for i in range(rounds):
                order = list(sizes[i % len(sizes) :] + sizes[: i % len(sizes)])
                for n in order:
                    _mw, session, urls = fills[n]
                    picked = [urls[rng.randrange(n)] for _ in range(per_round)]
                    results[n].append(await _round(session, picked))
                    # The same URLs without the middleware: aiohttp's own cost of many URLs.
                    controls[n].append(await _round(bare, picked, fixed))
            for n in sizes:
                mw = fills[n][0]
                cpu = median([m.cpu / per_round for m in results[n]])
                control = median([m.cpu / per_round for m in controls[n]])
                table.add(
                    f"{n:,}",
                    f"{median([per_round / m.wall for m in results[n]]):,.0f}",
                    us(cpu),
                    us(control),
                    f"{(cpu - control) * 1e6:+.1f}",
                    mw.stats.total_token_requests - before[n],
                )
        finally:
            await bare.close()
            for mw, session, _urls in fills.values():
                await session.close()
                await mw.close()
    return table


async def _round_fill(session: aiohttp.ClientSession, urls: Sequence[str]) -> None:
    async def one(url: str) -> None:
        async with session.get(url) as resp:
            await resp.read()

    await asyncio.gather(*(one(u) for u in urls))


def run(quick: bool) -> Report:
    """Measure lookups and end-to-end hits; ``quick`` uses smaller budgets and sizes."""
    report = Report(NAME, TITLE, [_lookup_table(quick)])
    report.tables.append(run_async(_end_to_end(quick)))
    report.notes.append(
        "The list scan is a Python rendering of the original's search (every token of the "
        "registry, in turn), for scale. 100,000 cached tokens end to end would need 100,000 "
        "token fetches to fill, so that size is measured on the lookup alone."
    )
    return report
