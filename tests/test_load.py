"""Load and faults: 10,000 requests, 200 repositories, 500 at once, a small pool, a flaky
token server.

Through one middleware and one session with a pool of 50 connections, pulls
run against the in-process bearer Registry while its TokenServer fails 5 % of
token requests with 503, and a chaos task adds latency spikes and dropped
connections. Tokens live a few seconds, so they expire and are refreshed
during the run. Every request must end, within a bound, in a success or a
clear error (an OCIAuthError or an aiohttp error); afterwards no task is
left over and the pool holds no connection. Then, under tracemalloc, after a
warm-up run, two equal runs show memory flat from one run to the next.

The figures are printed (``pytest -s tests/test_load.py``).

Nothing here may depend on how fast the machine is. The faults follow the token
traffic (a decision every :data:`CHAOS_EVERY` token requests), not the clock, and
the bounds that involve time are stated in the run's own measured duration. Both
used to be fixed: a drop queued every 50 ms and "fewer token requests than half
the requests" made a slow run (Python 3.10, a loaded machine) a harsher run with
a stricter bound, and the test failed there now and then.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import random
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest

import aociauth
from aociauth import ConfigFile, StdTransportParams
from aociauth.testing import Registry, TokenServer

pytestmark = pytest.mark.slow

REPOSITORIES = 200
REQUESTS = 10_000
CONCURRENCY = 500
POOL = 50
MEMORY_RUN = 2_000
#: Seconds any one request may take before it counts as hung. A hang, not a slow
#: request: 500 requests in flight on one saturated event loop wait their turn
#: (Little's law: 500 / throughput), tens of seconds on a loaded 2-core machine
#: under tracemalloc.
REQUEST_BOUND = 120.0
#: How long a task left at the end may take to finish before it counts as leaked.
SETTLE_BOUND = 30.0
PASSWORD = "load-password"
#: Tokens live this many seconds, and are refreshed ahead in the last half of it.
EXPIRES_IN = 3
REFRESH_FRACTION = 0.5
#: Token requests between two chaos decisions.
CHAOS_EVERY = 10


@dataclass
class Figures:
    requests: int = 0
    ok: int = 0
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    hung: int = 0
    token_requests: int = 0
    token_fetches: int = 0
    token_server_requests: int = 0
    injected: int = 0
    registry_401s: int = 0
    middleware_401s: int = 0
    seconds: float = 0.0

    def row(self, name: str) -> str:
        failures = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) or "none"
        return (
            f"{name}: {self.requests} requests in {self.seconds:.1f}s, {self.ok} ok, "
            f"failures: {failures}, hung {self.hung}; token requests {self.token_requests} "
            f"(token server saw {self.token_server_requests}, {self.injected} failed on purpose); "
            f"401s {self.registry_401s} (middleware: {self.middleware_401s})"
        )


@dataclass
class Rig:
    ts: TokenServer
    reg: Registry
    urls: list[str]


@pytest.fixture
async def rig(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    # The test doubles remember up to 10,000 verified tokens (a bounded cache of
    # their own); with tokens renewed every few seconds, filling it would read as
    # growth from run to run. Small bounds keep the measure on the client side.
    monkeypatch.setattr("aociauth.testing.registry._ACCESS_CACHE_LIMIT", 100)
    monkeypatch.setattr("aociauth.testing._jwt._VERIFIED_CACHE_LIMIT", 100)
    async with (
        TokenServer(
            users={"alice": PASSWORD}, expires_in=EXPIRES_IN, failure_rate=0.05, seed=7
        ) as ts,
        Registry(auth="bearer", token_server=ts, record_requests=False) as reg,
    ):
        urls = []
        for i in range(REPOSITORIES):
            digest = reg.seed_blob(f"load/repo{i:03}", b"blob %d" % i)
            urls.append(f"{reg.url}/v2/load/repo{i:03}/blobs/{digest}")
        yield Rig(ts, reg, urls)


async def chaos(ts: TokenServer, stop: asyncio.Event, rnd: random.Random) -> None:
    """Latency spikes and dropped connections at the token server, until ``stop``.

    Every :data:`CHAOS_EVERY` token requests: a new latency, and half the time a
    dropped connection for the next request (5 % of token requests).
    """
    next_at = ts.counters.requests
    while not stop.is_set():
        if ts.counters.requests >= next_at:
            next_at = ts.counters.requests + CHAOS_EVERY
            ts.latency = rnd.choice([0.0, 0.0, 0.0, 0.0, 0.02, 0.1, 0.3])
            if rnd.random() < 0.5:
                ts.respond_with("drop")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.01)
    ts.latency = 0.0
    ts.clear_failures()


async def run(
    rig: Rig, session: aiohttp.ClientSession, mw: aociauth.AuthMiddleware, n: int
) -> Figures:
    figures = Figures(requests=n)
    before = mw.stats.as_dict()
    ts_before = (rig.ts.counters.requests, rig.ts.counters.failures_injected)
    reg_before = rig.reg.counters.unauthorized
    rnd = random.Random(n)
    order = [rig.urls[rnd.randrange(len(rig.urls))] for _ in range(n)]
    queue = collections.deque(order)
    stop = asyncio.Event()
    chaos_task = asyncio.ensure_future(chaos(rig.ts, stop, random.Random(n + 1)))
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def one(url: str) -> None:
        async with session.get(url) as r:
            await r.read()
            if r.status != 200:
                figures.failures[f"HTTP {r.status}"] += 1
                return
        figures.ok += 1

    async def worker() -> None:
        while queue:
            url = queue.popleft()
            try:
                await asyncio.wait_for(one(url), REQUEST_BOUND)
            except asyncio.TimeoutError:
                figures.hung += 1
            except (aociauth.OCIAuthError, aiohttp.ClientError) as exc:
                figures.failures[type(exc).__name__] += 1

    try:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    finally:
        stop.set()
        await chaos_task
    figures.seconds = loop.time() - started
    after = mw.stats.as_dict()
    figures.token_requests = after["total_token_requests"] - before["total_token_requests"]
    figures.token_fetches = after["token_fetches"] - before["token_fetches"]
    figures.middleware_401s = after["responses_401"] - before["responses_401"]
    figures.token_server_requests = rig.ts.counters.requests - ts_before[0]
    figures.injected = rig.ts.counters.failures_injected - ts_before[1]
    figures.registry_401s = rig.reg.counters.unauthorized - reg_before
    return figures


async def settle(baseline: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    """Tasks other than ``baseline`` still alive :data:`SETTLE_BOUND` seconds from now.

    Server-side handlers end once they see their connections close; a task that
    is never going to end is what this finds, however slow the machine.
    """
    current = asyncio.current_task()
    extra = {t for t in asyncio.all_tasks() if t not in baseline and t is not current}
    if extra:
        await asyncio.wait(extra, timeout=SETTLE_BOUND)
    return {t for t in extra if not t.done()}


#: Allocations made by the library's own code, not its test doubles'.
_OURS = (
    tracemalloc.Filter(True, "*/aociauth/*"),
    tracemalloc.Filter(False, "*/aociauth/testing/*"),
)


def _client_side(snapshot: tracemalloc.Snapshot) -> int:
    return sum(stat.size for stat in snapshot.filter_traces(_OURS).statistics("filename"))


async def test_ten_thousand_requests_under_faults_all_end_and_leave_nothing(rig: Rig) -> None:
    baseline = set(asyncio.all_tasks())
    config = ConfigFile.from_dict(
        {"auths": {rig.reg.host: {"username": "alice", "password": PASSWORD}}}
    )
    # Tokens live 3 s: refreshing in the last half of their life puts refresh ahead
    # to work too (with the default 0.15, less than the 1 s expiry margin is left).
    params = StdTransportParams(
        config=config,
        token_timeout=5.0,
        retry_backoff=0.05,
        retry_max_wait=0.5,
        refresh_fraction=REFRESH_FRACTION,
    )
    connector = aiohttp.TCPConnector(limit=POOL)
    async with (
        aociauth.new_std_transport(params) as mw,
        aiohttp.ClientSession(middlewares=[mw], connector=connector) as session,
    ):
        main = await run(rig, session, mw, REQUESTS)

        async def traced(requests: int) -> tuple[Figures, int, int]:
            """A run, then the traced bytes retained after it and at its peak."""
            tracemalloc.reset_peak()
            figures = await run(rig, session, mw, requests)
            rig.ts.reset_counters()
            gc.collect()
            current, peak = tracemalloc.get_traced_memory()
            return figures, current, peak

        tracemalloc.start()
        try:
            # A traced warm-up: allocations made before tracing began are replaced by
            # traced ones during the first traced run, which would read as growth.
            await traced(MEMORY_RUN // 2)
            second, current2, peak2 = await traced(MEMORY_RUN)
            ours2 = _client_side(tracemalloc.take_snapshot())
            third, current3, peak3 = await traced(MEMORY_RUN)
            snapshot3 = tracemalloc.take_snapshot()
            ours3 = _client_side(snapshot3)
            fourth, current4, _ = await traced(MEMORY_RUN)
            snapshot4 = tracemalloc.take_snapshot()
            ours4 = _client_side(snapshot4)
            grown = snapshot4.filter_traces(_OURS).compare_to(
                snapshot3.filter_traces(_OURS), "lineno"
            )[:8]
        finally:
            tracemalloc.stop()
        print("\n" + main.row(f"run 1 ({REQUESTS} requests)"))
        print(second.row(f"run 2 ({MEMORY_RUN} requests)"))
        print(third.row(f"run 3 ({MEMORY_RUN} requests)"))
        print(fourth.row(f"run 4 ({MEMORY_RUN} requests)"))
        print(
            "traced memory after / peak during: "
            f"run 2 {current2 / 1e6:.1f} / {peak2 / 1e6:.1f} MB, "
            f"run 3 {current3 / 1e6:.1f} / {peak3 / 1e6:.1f} MB, run 4 {current4 / 1e6:.1f} MB; "
            f"aociauth's own: {ours2 / 1e6:.2f}, {ours3 / 1e6:.2f}, {ours4 / 1e6:.2f} MB"
        )
        print(f"middleware stats: {mw.stats.as_dict()}")
        # Nothing holds a connection once every response is read.
        assert len(connector._acquired) == 0
    leftover = await settle(baseline)

    for figures in (main, second, third, fourth):
        assert figures.hung == 0
        assert figures.ok + sum(figures.failures.values()) == figures.requests
        # Faults were injected, and retries absorbed them.
        assert figures.injected > 0
        assert figures.ok >= 0.99 * figures.requests
        assert figures.token_requests > 0
    # Tokens expired and were fetched again: more scopes asked for than repositories
    # (a fetch asks for its own and, when misses meet, the scopes of the requests
    # waiting with it), yet per repository at most two fetches in each refresh period
    # (the refresh ahead, and a request's own when the refresh has not landed by the
    # time the token stops being usable): fetches were shared and tokens reused.
    # Tokens expire by the clock, so the bound is in the run's own duration.
    period = EXPIRES_IN * REFRESH_FRACTION
    assert mw.stats.token_fetches + mw.stats.coalesced_scopes > REPOSITORIES
    assert main.token_fetches <= REPOSITORIES * 2 * (main.seconds / period + 1)
    assert mw.stats.refreshes_ahead > 0
    assert leftover == set()
    # Flat: what the library's own code holds after a run stops growing. (The whole
    # process's retained memory is printed, not compared: it moves by megabytes with
    # what the in-process servers and aiohttp's buffers hold at the moment a run ends,
    # either way. Peaks depend on the scheduling of the moment.) A leak grows with
    # every run; the bounded tables (tokens, the hot-path memo) may still be filling
    # during one run on a slow machine, where tokens expire more often per request,
    # so one of two consecutive pairs of runs must be flat.
    # And the whole process, over two runs, by more than its fluctuation (up to 2 MB).
    assert current4 <= current2 + 3_000_000
    assert ours3 <= ours2 + 250_000 or ours4 <= ours3 + 250_000, (
        f"aociauth's own allocations {ours2 / 1e6:.2f} -> {ours3 / 1e6:.2f} -> "
        f"{ours4 / 1e6:.2f} MB; grown most in the last run:\n" + "\n".join(str(d) for d in grown)
    )
