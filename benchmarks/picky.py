"""Picky token servers: what a burst and a sequence of pulls cost when fetching ahead fails.

Some token servers grant only what the registry has challenged for (the
"picky" server here answers 401 to a token request for a repository the
registry has not yet answered 401 for, and to any request for more than it
grants). A client that fetches tokens ahead of the registry's 401 earns a
refusal per repository from such a server. aociauth stops fetching ahead at a
registry after one refusal, and until a token server has granted a fetch
ahead, lets one go at a time (issue 11 item 4), so N repositories cost at most
N + 2 token requests. A server that grants ahead loses nothing. Counts, with
the wall time of one run for scale.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aociauth

from ._common import (
    PASSWORD,
    USER,
    Report,
    Table,
    auth_session,
    ms,
    password_config,
    pull_manifest,
    run_async,
    timed,
)

NAME = "picky"
TITLE = "Picky token servers"

VARIANTS: dict[str, Callable[..., aociauth.StdTransportParams]] = {
    "aociauth (defaults)": aociauth.StdTransportParams,
    "aociauth, each miss asks alone": lambda **kw: aociauth.StdTransportParams(
        coalesce_token_requests=1, **kw
    ),
    "original policy": aociauth.StdTransportParams.original_policy,
}


async def _run(
    name: str, repositories: int, *, picky: bool, concurrent: bool
) -> tuple[int, int, int, float]:
    """(token requests, registry 401s, failed GETs, wall seconds) of one run."""
    from aociauth.testing.registry import Registry
    from aociauth.testing.tokenserver import Access, TokenServer

    async with TokenServer(users={USER: PASSWORD}) as ts:
        registry = Registry(auth="bearer", token_server=ts)
        names = [f"bench/app{i}" for i in range(repositories)]
        for repository in names:
            registry.seed_image(repository, "v1")
        if picky:

            def challenged_for(subject: str | None, access: Access) -> bool:
                prefix = f"/v2/{access.resource}/"
                return any(r.status == 401 and r.path.startswith(prefix) for r in registry.requests)

            ts.grants = challenged_for
            ts.picky = True
        async with registry:
            config = password_config(registry.host, USER, PASSWORD)
            mw = aociauth.new_std_transport(VARIANTS[name](config=config))
            failed = 0

            async def one(repository: str) -> None:
                nonlocal failed
                try:
                    await pull_manifest(session, registry.url, repository)
                except Exception:
                    failed += 1

            async def pulls() -> None:
                if concurrent:
                    await asyncio.gather(*(one(r) for r in names))
                else:
                    for r in names:
                        await one(r)

            async with mw, auth_session(mw) as session:
                wall = (await timed(pulls)).wall
            return ts.counters.requests, registry.counters.unauthorized, failed, wall


async def _main(quick: bool) -> Report:
    concurrent_n = 50 if quick else 100
    sequential_n = 10
    tables = []
    for picky in (True, False):
        server = "picky token server" if picky else "token server that grants ahead"
        table = Table(
            f"{server}: {concurrent_n} concurrent pulls, then {sequential_n} one after another",
            [
                "variant",
                "concurrent: token requests",
                "401s",
                "failed",
                "wall ms",
                "sequential: token requests",
                "401s",
                "failed",
            ],
        )
        for name in VARIANTS:
            c = await _run(name, concurrent_n, picky=picky, concurrent=True)
            s = await _run(name, sequential_n, picky=picky, concurrent=False)
            table.add(name, c[0], c[1], c[2], ms(c[3]), s[0], s[1], s[2])
        tables.append(table)
    report = Report(NAME, TITLE, tables)
    report.notes.append(
        "In-process registry (bearer) and token server. The picky server grants a "
        "repository only once the registry has answered 401 for it, and refuses any "
        "request for more than it grants. Target: at most N + 2 token requests for N "
        "repositories."
    )
    return report


def run(quick: bool) -> Report:
    """Count what pulls cost against picky and granting token servers."""
    result: Report = run_async(_main(quick))
    return result
