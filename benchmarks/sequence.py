"""N new repositories in sequence: what each new repository costs in round trips.

Plain HTTP calls carry no ``RequestInfo``, so the original cannot know a
request's scope before the registry says it: every new repository costs a
401 and a second send. aociauth infers the scope from the path and fetches
the token first, so after the registry's first challenge no 401 follows.
One run per variant pulls 100 repositories one after another; the counters
after the N-th pull are the cost of N new repositories.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aociauth
from aociauth.testing.registry import Registry
from aociauth.testing.tokenserver import TokenServer

from ._common import (
    PASSWORD,
    USER,
    Report,
    Table,
    auth_session,
    bearer_registry,
    median,
    ms,
    password_config,
    plot_panels,
    pull_manifest,
    reset_counters,
    run_async,
)

NAME = "sequence"
TITLE = "N new repositories in sequence"

REPOSITORIES = [f"seq/r{i:03d}" for i in range(100)]
SHOWN = (1, 2, 10, 50, 100)
#: Latency added to every registry and token request: none, and a nearby network's.
RTTS = (0.0, 0.002)

VARIANTS: dict[str, Callable[..., aociauth.StdTransportParams]] = {
    "aociauth (defaults)": aociauth.StdTransportParams,
    "original policy": aociauth.StdTransportParams.original_policy,
}


async def _walk(
    registry: Registry, ts: TokenServer, make: Callable[..., aociauth.StdTransportParams]
) -> list[tuple[int, int, int, float]]:
    """Pull every repository once, in order; the counters after each pull."""
    reset_counters(registry, ts)
    config = password_config(registry.host, USER, PASSWORD)
    mw = aociauth.new_std_transport(make(config=config))
    points = []
    async with mw, auth_session(mw) as session:
        started = time.perf_counter()
        for repository in REPOSITORIES:
            await pull_manifest(session, registry.url, repository)
            points.append(
                (
                    registry.counters.unauthorized,
                    registry.counters.requests,
                    ts.counters.requests,
                    time.perf_counter() - started,
                )
            )
    return points


async def _main(quick: bool) -> Report:
    reps = 3 if quick else 7
    # (401s, registry requests, token requests) after each pull, and the median wall
    # times after each pull, on plain loopback and with a simulated round-trip time.
    counts: dict[str, list[tuple[int, int, int]]] = {}
    walls: dict[tuple[str, float], list[float]] = {}
    for rtt in RTTS:
        async with bearer_registry(REPOSITORIES, token_latency=rtt) as (registry, ts):
            registry.latency = rtt
            runs: dict[str, list[list[float]]] = {name: [] for name in VARIANTS}
            for rep in range(reps):
                names = list(VARIANTS) if rep % 2 == 0 else list(reversed(VARIANTS))
                for name in names:
                    walked = await _walk(registry, ts, VARIANTS[name])
                    counts[name] = [(p[0], p[1], p[2]) for p in walked]
                    runs[name].append([p[3] for p in walked])
            for name, samples in runs.items():
                walls[(name, rtt)] = [median(at_n) for at_n in zip(*samples, strict=True)]
    table = Table(
        f"Pull N new repositories one after another (counts after the N-th; wall: median of "
        f"{reps}, on loopback and with {RTTS[1] * 1000:.0f} ms added to every request)",
        [
            "variant",
            "N",
            "401s",
            "registry requests",
            "token requests",
            "round trips",
            "wall ms",
            f"wall ms (+{RTTS[1] * 1000:.0f} ms)",
        ],
    )
    for n in SHOWN:
        for name, points in counts.items():
            unauthorized, requests, tokens = points[n - 1]
            table.add(
                name,
                n,
                unauthorized,
                requests,
                tokens,
                requests + tokens,
                ms(walls[(name, RTTS[0])][n - 1]),
                ms(walls[(name, RTTS[1])][n - 1]),
            )
    xs = list(range(1, len(REPOSITORIES) + 1))
    plot = plot_panels(
        "sequence.png",
        "N new repositories in sequence",
        "N (repositories pulled)",
        [
            ("401 responses", {n: (xs, [p[0] for p in pts]) for n, pts in counts.items()}),
            (
                "round trips (registry + token server)",
                {n: (xs, [p[1] + p[2] for p in pts]) for n, pts in counts.items()},
            ),
            (
                f"wall time (ms), {RTTS[1] * 1000:.0f} ms added per request",
                {n: (xs, [w * 1000 for w in walls[(n, RTTS[1])]]) for n in VARIANTS},
            ),
        ],
    )
    report = Report(NAME, TITLE, [table], [plot])
    report.notes.append(
        "Counts are exact and the same on every run. On loopback a round trip costs "
        "well under a millisecond, so wall time there mostly measures CPU (token signing "
        "and checking in this process); the added latency stands for a real network."
    )
    return report


def run(quick: bool) -> Report:
    """Count the round trips and time them; ``quick`` repeats fewer times."""
    result: Report = run_async(_main(quick))
    return result
