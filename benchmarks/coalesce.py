"""Coalesced token requests: a cold burst over 100 repositories, by cap, and what it costs after.

A middleware that has not contacted the registry yet pulls one manifest from
each of 100 repositories at once, with ``coalesce_token_requests`` set to 1
(every miss asks alone), 10, 25, 50 and 100. The burst's cost: token
requests, round trips (registry plus token requests), wall time and client
CPU. A wider token is not free: it goes with every later request, so the same
middleware then makes warm GETs over the 100 repositories, one at a time, and
the cost per GET is measured beside the size of the largest token issued.

The registry and token server are the project's own (``aociauth.testing``:
ES256 JWTs whose ``access`` claim lists every repository granted, verified by
the registry on each request) in a separate process, so
``time.process_time()`` deltas here are the client's CPU alone.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import multiprocessing.connection
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import aiohttp

import aociauth

from ._common import (
    OCI_MANIFEST,
    PASSWORD,
    USER,
    Measured,
    Report,
    Table,
    auth_session,
    median,
    ms,
    password_config,
    run_async,
    timed,
    us,
)

NAME = "coalesce"
TITLE = "Coalesced token requests: cold burst over 100 repositories, by cap"

REPOSITORIES = [f"bench/app{i:03d}" for i in range(100)]
CAPS = (1, 10, 25, 50, 100)
#: Seconds each token request waits in the token server: a nearby token service.
TOKEN_LATENCY = 0.005


@dataclass(frozen=True)
class _Counts:
    registry_requests: int
    unauthorized: int
    token_requests: int
    widest: int
    token_bytes: int


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """Child process: the registry and token server, answering the parent's commands."""
    from aociauth.testing.registry import Registry
    from aociauth.testing.tokenserver import TokenServer

    async def main() -> None:
        async with TokenServer(
            users={USER: PASSWORD}, latency=TOKEN_LATENCY, remember_tokens=True
        ) as ts:
            registry = Registry(auth="bearer", token_server=ts, record_requests=False)
            for repository in REPOSITORIES:
                registry.seed_image(repository, "v1")
            async with registry:
                conn.send(registry.url)
                loop = asyncio.get_running_loop()
                while True:
                    try:
                        command = await loop.run_in_executor(None, conn.recv)
                    except EOFError:
                        return
                    if command == "reset":
                        registry.reset_counters()
                        ts.reset_counters()
                        ts.issued.clear()
                        conn.send(None)
                    elif command == "counts":
                        conn.send(
                            _Counts(
                                registry.counters.requests,
                                registry.counters.unauthorized,
                                ts.counters.requests,
                                max((len(r.scopes) for r in ts.requests), default=0),
                                max((len(t) for t in ts.issued), default=0),
                            )
                        )
                    else:
                        return

    asyncio.run(main())


class _Servers:
    """The child process of :func:`_serve`; ``url`` is the registry's."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        self._child = child
        self.url = ""

    def __enter__(self) -> _Servers:
        self._proc.start()
        self._child.close()
        if not self._conn.poll(60):
            self.__exit__()
            raise RuntimeError("the registry process did not start within 60 s")
        self.url = str(self._conn.recv())
        return self

    def __exit__(self, *exc: object) -> None:
        with suppress(OSError):
            self._conn.send("stop")
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._conn.close()

    def ask(self, command: str) -> Any:
        self._conn.send(command)
        return self._conn.recv()


async def _get(session: aiohttp.ClientSession, base: str, repository: str) -> int:
    """GET ``repository:v1``'s manifest; its status (a failure is counted, not raised)."""
    url = f"{base}/v2/{repository}/manifests/v1"
    async with session.get(url, headers={"Accept": OCI_MANIFEST}) as resp:
        await resp.read()
        return resp.status


async def _one_cap(
    servers: _Servers, cap: int, warm_gets: int
) -> tuple[Measured, _Counts, Measured, tuple[int, int]]:
    config = password_config(servers.url.removeprefix("http://"), USER, PASSWORD)
    mw = aociauth.new_std_transport(
        aociauth.StdTransportParams(config=config, coalesce_token_requests=cap)
    )
    servers.ask("reset")
    async with mw, auth_session(mw) as session:
        statuses: list[int] = []

        async def burst() -> None:
            got = await asyncio.gather(*(_get(session, servers.url, r) for r in REPOSITORIES))
            statuses.extend(got)

        cold = await timed(burst)
        counts: _Counts = servers.ask("counts")
        cycle = itertools.cycle(REPOSITORIES)

        async def warm() -> None:
            for _ in range(warm_gets):
                statuses.append(await _get(session, servers.url, next(cycle)))

        failed_cold = sum(status != 200 for status in statuses)
        hot = await timed(warm)
    return cold, counts, hot, (failed_cold, sum(status != 200 for status in statuses) - failed_cold)


async def _main(quick: bool) -> Report:
    reps, warm_gets = (3, 1000) if quick else (7, 3000)
    colds: dict[int, list[Measured]] = {cap: [] for cap in CAPS}
    warms: dict[int, list[Measured]] = {cap: [] for cap in CAPS}
    counts: dict[int, _Counts] = {}
    failed: dict[int, list[int]] = {cap: [0, 0] for cap in CAPS}
    with _Servers() as servers:
        for rep in range(reps):
            # A rotating order, so no cap always runs first (on a cold process) or last.
            shift = rep % len(CAPS)
            for cap in CAPS[shift:] + CAPS[:shift]:
                cold, counted, warm, failures = await _one_cap(servers, cap, warm_gets)
                failed[cap][0] += failures[0]
                failed[cap][1] += failures[1]
                colds[cap].append(cold)
                warms[cap].append(warm)
                counts[cap] = counted
    burst = Table(
        f"{len(REPOSITORIES)} concurrent GETs, one per repository, cold middleware; "
        f"token latency {TOKEN_LATENCY * 1000:.0f} ms; medians of {reps}",
        [
            "cap",
            "token requests",
            "widest (items)",
            "401s",
            "round trips",
            "wall ms",
            "client CPU ms",
            "GETs failed",
        ],
    )
    after = Table(
        f"Then {warm_gets} sequential warm GETs over the same repositories; medians of {reps}",
        [
            "cap",
            "largest token (bytes)",
            "wall us/GET",
            "client CPU us/GET",
            "CPU vs cap 1",
            "GETs failed",
        ],
    )
    base_cpu = median([m.cpu / warm_gets for m in warms[1]])
    for cap in CAPS:
        c = counts[cap]
        burst.add(
            cap,
            c.token_requests,
            c.widest,
            c.unauthorized,
            c.registry_requests + c.token_requests,
            ms(median([m.wall for m in colds[cap]])),
            ms(median([m.cpu for m in colds[cap]])),
            failed[cap][0],
        )
        cpu = median([m.cpu / warm_gets for m in warms[cap]])
        after.add(
            cap,
            c.token_bytes,
            us(median([m.wall / warm_gets for m in warms[cap]])),
            us(cpu),
            f"{cpu / base_cpu:.3f}",
            failed[cap][1],
        )
    report = Report(NAME, TITLE, [burst, after])
    report.notes.append(
        "Registry and token server (aociauth.testing, ES256 JWTs) in a separate process: "
        "client CPU is this process's alone. 'widest': the most scope items one token "
        "request asked for. Round trips: registry requests plus token requests. The "
        "default cap is 50: two token requests for the 100-repository burst (the goal "
        "is at most 2) with tokens half the size of cap 100's."
    )
    return report


def run(quick: bool) -> Report:
    """Measure the cold burst per cap and the warm GETs after it; ``quick`` repeats less."""
    result: Report = run_async(_main(quick))
    return result
