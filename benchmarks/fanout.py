"""Fan-out: 100 repositories pulled at once, against token servers of growing latency.

The original holds one lock per registry across each token fetch, so the 100
fetches that its 100 401s cause run one after another: wall time grows as
100 x latency. aociauth lets one request make first contact; once its 401
has named the realm, the first one's token request also asks for 49 of the
others' scopes, and the other 50 share one more token request after it
(``coalesce_token_requests``, 50): about two token latencies, for 2 token
requests instead of 100. With the cap at 1 the 99 fetch in parallel with
the first: about one token latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aociauth

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
    timed,
)

NAME = "fan-out"
TITLE = "Fan-out over 100 repositories"

REPOSITORIES = [f"fan/r{i:03d}" for i in range(100)]


def _original_without_lock(**kw: Any) -> aociauth.StdTransportParams:
    return replace(aociauth.StdTransportParams.original_policy(**kw), serialize_token_fetches=False)


def _each_miss_alone(**kw: Any) -> aociauth.StdTransportParams:
    return aociauth.StdTransportParams(coalesce_token_requests=1, **kw)


VARIANTS: dict[str, Callable[..., aociauth.StdTransportParams]] = {
    "aociauth (defaults)": aociauth.StdTransportParams,
    "aociauth, each miss asks alone": _each_miss_alone,
    "original policy (lock per registry)": aociauth.StdTransportParams.original_policy,
    "original policy without the lock": _original_without_lock,
}


async def _once(
    registry_url: str, host: str, make: Callable[..., aociauth.StdTransportParams]
) -> float:
    config = password_config(host, USER, PASSWORD)
    mw = aociauth.new_std_transport(make(config=config))
    async with mw, auth_session(mw) as session:

        async def fan_out() -> None:
            await asyncio.gather(*(pull_manifest(session, registry_url, r) for r in REPOSITORIES))

        return (await timed(fan_out)).wall


async def _main(quick: bool) -> Report:
    latencies_ms = [25, 50, 100, 200]
    reps = 1 if quick else 3
    table = Table(
        f"{len(REPOSITORIES)} manifests of {len(REPOSITORIES)} repositories at once, cold "
        f"middleware; wall: median of {reps}",
        ["variant", "token latency ms", "wall ms", "401s", "token requests", "registry requests"],
    )
    walls: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for latency in latencies_ms:
        async with bearer_registry(REPOSITORIES, token_latency=latency / 1000) as (registry, ts):
            for name, make in VARIANTS.items():
                runs = []
                for _ in range(reps):
                    reset_counters(registry, ts)
                    runs.append(await _once(registry.url, registry.host, make))
                walls[name].append(median(runs))
                table.add(
                    name,
                    latency,
                    ms(median(runs)),
                    registry.counters.unauthorized,
                    ts.counters.requests,
                    registry.counters.requests,
                )
    plot = plot_panels(
        "fanout.png",
        f"Pulling {len(REPOSITORIES)} repositories at once (cold)",
        "token server latency (ms)",
        [
            (
                "wall time (ms)",
                {n: (latencies_ms, [w * 1000 for w in ws]) for n, ws in walls.items()},
            )
        ],
        logy=True,
    )
    report = Report(NAME, TITLE, [table], [plot])
    report.notes.append(
        "'original policy without the lock' is the original's flow (a 401 per repository, "
        "no inference) with fetches allowed to overlap: it isolates what the lock costs."
    )
    return report


def run(quick: bool) -> Report:
    """Measure the fan-out; ``quick`` runs each point once."""
    result: Report = run_async(_main(quick))
    return result
