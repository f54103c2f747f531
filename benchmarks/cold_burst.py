"""Cold burst: 1,000 concurrent pulls of one repository from a registry not yet contacted.

The original lets every request of the burst go unauthenticated, so the
registry answers 1,000 401s and each request is sent twice. aociauth sends
one request first; the rest wait for its answer and go with the token.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import aiohttp

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
    pull_manifest,
    reset_counters,
    run_async,
    timed,
)

NAME = "cold-burst"
TITLE = "Cold burst"

BURST = 1000
REPOSITORY = "bench/app"

VARIANTS: dict[str, Callable[..., aociauth.StdTransportParams]] = {
    "aociauth (defaults)": aociauth.StdTransportParams,
    "original policy": aociauth.StdTransportParams.original_policy,
}


async def _burst(session: aiohttp.ClientSession, base: str) -> None:
    await asyncio.gather(*(pull_manifest(session, base, REPOSITORY) for _ in range(BURST)))


async def _main(quick: bool) -> Report:
    reps = 3 if quick else 7
    walls: dict[str, list[float]] = {name: [] for name in VARIANTS}
    counts: dict[str, tuple[int, int, int, int]] = {}
    async with bearer_registry([REPOSITORY]) as (registry, ts):
        for rep in range(reps):
            names = list(VARIANTS) if rep % 2 == 0 else list(reversed(VARIANTS))
            for name in names:
                config = password_config(registry.host, USER, PASSWORD)
                mw = aociauth.new_std_transport(VARIANTS[name](config=config))
                reset_counters(registry, ts)
                async with mw, auth_session(mw) as session:
                    burst = functools.partial(_burst, session, registry.url)
                    walls[name].append((await timed(burst)).wall)
                counts[name] = (
                    registry.counters.requests,
                    registry.counters.unauthorized,
                    ts.counters.requests,
                    mw.stats.first_contact_waits,
                )
    table = Table(
        f"{BURST} concurrent GETs of one manifest, cold middleware; wall: median of {reps}",
        ["variant", "wall ms", "registry requests", "401s", "token requests", "held back"],
    )
    for name in VARIANTS:
        requests, unauthorized, tokens, waits = counts[name]
        table.add(name, ms(median(walls[name])), requests, unauthorized, tokens, waits)
    report = Report(NAME, TITLE, [table])
    report.notes.append(
        "In-process registry (bearer) and token server; aiohttp's default connection "
        "limit (100 per session) for both. 'held back': requests that waited for the "
        "first contact's answer instead of going unauthenticated."
    )
    return report


def run(quick: bool) -> Report:
    """Measure the cold burst; ``quick`` repeats it fewer times."""
    result: Report = run_async(_main(quick))
    return result
