"""The embedded demo behind ``aociauth demo``: a concurrent pull, and what it cost.

:func:`run_demo` starts an in-process :class:`~aociauth.testing.TokenServer`
and a bearer-token :class:`~aociauth.testing.Registry` on 127.0.0.1, seeds
``repos`` small OCI images, and pulls every image's manifest and config blob
concurrently through an :class:`~aociauth.AuthMiddleware` that has Basic
credentials for the registry (as ``docker login`` leaves them). With
``compare`` it pulls again, from a cold cache, with
:meth:`~aociauth.StdTransportParams.original_policy`: aociauth run with the Go
original's policy. Every figure reported is measured: the middleware's
:class:`~aociauth.AuthStats` and the servers' own counters. Everything it
starts is stopped before it returns.

Needs the ``testing`` extra (``cryptography``, for the token server's
signatures); ``rich`` (the ``demo`` extra) draws the progress bar and the
table, and plain text is printed without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import aiohttp
import anyio

from aociauth.config import ConfigFile
from aociauth.errors import OCIAuthError
from aociauth.middleware import StdTransportParams, new_std_transport
from aociauth.testing.registry import Registry
from aociauth.testing.tokenserver import TokenServer

__all__ = [
    "MANIFEST_ACCEPT",
    "POLICIES",
    "DemoOptions",
    "DemoResult",
    "PullFigures",
    "main",
    "percentile",
    "render_plain",
    "run_demo",
]

#: The Accept header of the demo's manifest requests (OCI and Docker types).
MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)

#: The policies the demo can pull with: aociauth's defaults, and the Go original's.
POLICIES: dict[str, Callable[[ConfigFile], StdTransportParams]] = {
    "aociauth": lambda config: StdTransportParams(config=config),
    "original": lambda config: StdTransportParams.original_policy(config=config),
}

_USER = "demo"

Progress = Callable[[str, int, int], None]
"""Called as ``progress(policy, images_done, images_total)`` after each image."""


@dataclass(frozen=True)
class DemoOptions:
    """What the demo pulls, and how.

    ``latency_ms`` is the time the token server takes to answer each request
    (real token servers take tens of milliseconds); ``concurrency`` the
    number of images pulled at once.
    """

    repos: int = 200
    concurrency: int = 32
    latency_ms: float = 20.0
    compare: bool = False

    def __post_init__(self) -> None:
        if self.repos < 1 or self.concurrency < 1:
            raise ValueError("repos and concurrency must be at least 1")
        if not math.isfinite(self.latency_ms) or self.latency_ms < 0:
            raise ValueError("latency_ms must be a finite number, not negative")


@dataclass(frozen=True)
class PullFigures:
    """What one pull measured.

    ``requests`` counts requests sent through the middleware, and
    ``registry_requests`` those the registry received (retries after a 401
    included); ``responses_401`` the 401s the middleware met;
    ``token_requests`` the requests it sent to the token server and
    ``token_server_requests`` those the token server received. Latencies are
    per image (manifest and config blob), in milliseconds.
    """

    policy: str
    images: int
    failed: int
    requests: int
    registry_requests: int
    responses_401: int
    token_requests: int
    token_server_requests: int
    cache_hits: int
    wall_time_s: float
    p50_ms: float
    p99_ms: float
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoResult:
    """The options, where the servers ran, and the figures of each pull in order."""

    options: DemoOptions
    registry_url: str
    realm: str
    runs: tuple[PullFigures, ...]

    def as_dict(self) -> dict[str, Any]:
        """A plain copy for JSON; ``runs`` maps each policy to its figures."""
        return {
            "options": asdict(self.options),
            "registry_url": self.registry_url,
            "realm": self.realm,
            "runs": {run.policy: asdict(run) for run in self.runs},
        }


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _repositories(n: int) -> list[str]:
    width = len(str(n - 1))
    return [f"demo/app-{i:0{width}d}" for i in range(n)]


async def _pull_image(session: aiohttp.ClientSession, base: str, repository: str) -> None:
    """Fetch an image's manifest, then its config blob, and check the blob's digest."""
    url = f"{base}/v2/{repository}/manifests/latest"
    async with session.get(url, headers={"Accept": MANIFEST_ACCEPT}) as resp:
        resp.raise_for_status()
        manifest = await resp.json(content_type=None)
    digest = manifest["config"]["digest"]
    async with session.get(f"{base}/v2/{repository}/blobs/{digest}") as resp:
        resp.raise_for_status()
        blob = await resp.read()
    if "sha256:" + hashlib.sha256(blob).hexdigest() != digest:
        raise ValueError(f"config blob of {repository} does not match its digest")


async def _pull(
    policy: str,
    config: ConfigFile,
    registry: Registry,
    token_server: TokenServer,
    repositories: list[str],
    concurrency: int,
    progress: Progress | None,
) -> PullFigures:
    """Pull every repository once, from a cold middleware, with ``policy``."""
    registry.reset_counters()
    token_server.reset_counters()
    latencies: list[float] = []
    failed = 0
    todo: Iterator[str] = iter(repositories)
    mw = new_std_transport(POLICIES[policy](config))
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        for repository in todo:
            started = time.perf_counter()
            try:
                await _pull_image(session, registry.url, repository)
            except (aiohttp.ClientError, OCIAuthError, ValueError, KeyError, TypeError):
                failed += 1
            else:
                latencies.append(time.perf_counter() - started)
            if progress is not None:
                progress(policy, len(latencies) + failed, len(repositories))

    started = time.perf_counter()
    async with mw, aiohttp.ClientSession(middlewares=[mw], connector=connector) as session:
        async with anyio.create_task_group() as tg:
            for _ in range(min(concurrency, len(repositories))):
                tg.start_soon(worker, session)
        wall = time.perf_counter() - started
    stats = mw.stats
    return PullFigures(
        policy=policy,
        images=len(latencies),
        failed=failed,
        requests=stats.requests,
        registry_requests=registry.counters.requests,
        responses_401=stats.responses_401,
        token_requests=stats.total_token_requests,
        token_server_requests=token_server.counters.requests,
        cache_hits=stats.cache_hits,
        wall_time_s=wall,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        stats=stats.as_dict(),
    )


async def run_demo(options: DemoOptions, progress: Progress | None = None) -> DemoResult:
    """Start the servers, seed the images, pull (twice with ``compare``), stop, and report."""
    password = secrets.token_urlsafe(16)
    repositories = _repositories(options.repos)
    policies = ["aociauth", "original"] if options.compare else ["aociauth"]
    async with (
        TokenServer(users={_USER: password}, latency=options.latency_ms / 1000) as ts,
        Registry(auth="bearer", token_server=ts, record_requests=False) as registry,
    ):
        for repository in repositories:
            registry.seed_image(repository)
        # What `docker login` would have written, kept in memory: the demo
        # never reads or touches the user's own configuration.
        config = ConfigFile.from_dict(
            {"auths": {registry.host: {"username": _USER, "password": password}}},
            source="<demo>",
        )
        runs = []
        for policy in policies:
            runs.append(
                await _pull(
                    policy,
                    config,
                    registry,
                    ts,
                    repositories,
                    options.concurrency,
                    progress,
                )
            )
        return DemoResult(options, registry.url, ts.realm, tuple(runs))


# -- showing it ------------------------------------------------------------------

_ROWS: tuple[tuple[str, Callable[[PullFigures], str]], ...] = (
    ("images pulled", lambda f: f"{f.images}" + (f" ({f.failed} failed)" if f.failed else "")),
    ("requests sent", lambda f: str(f.requests)),
    # "sent + resent": a bare total such as 401 would read like a status code.
    (
        "requests the registry got",
        lambda f: f"{f.requests} + {f.registry_requests - f.requests} resent",
    ),
    ("401 responses", lambda f: str(f.responses_401)),
    ("token requests", lambda f: str(f.token_requests)),
    ("cache hits", lambda f: str(f.cache_hits)),
    ("wall time", lambda f: f"{f.wall_time_s:.2f} s"),
    ("p50 latency / image", lambda f: f"{f.p50_ms:.1f} ms"),
    ("p99 latency / image", lambda f: f"{f.p99_ms:.1f} ms"),
)

_TITLES = {"aociauth": "aociauth", "original": "aociauth with the Go original's policy"}


def _headline(result: DemoResult) -> str:
    o = result.options
    return (
        f"Pulled {o.repos} images (manifest + config blob) from an in-process registry at "
        f"{result.registry_url} (bearer tokens from {result.realm}, "
        f"{o.latency_ms:g} ms per token request), {o.concurrency} at a time."
    )


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _summary(result: DemoResult) -> str:
    """A sentence on the difference, from the figures measured."""
    if len(result.runs) < 2:
        a = result.runs[0]
        return (
            f"The registry answered 401 {_times(a.responses_401)} and the token server was "
            f"asked {_times(a.token_requests)} for {a.images} images. Run with --compare to "
            "see aociauth run with the Go original's policy beside it."
        )
    a, b = result.runs[0], result.runs[1]
    saved = b.registry_requests - a.registry_requests
    fewer = f"{saved} fewer" if saved >= 0 else f"{-saved} more"
    walls = f"{a.wall_time_s:.2f} s against {b.wall_time_s:.2f} s"
    if 0 < a.wall_time_s < b.wall_time_s:
        pace = f"was {b.wall_time_s / a.wall_time_s:.1f} times as fast ({walls})"
    else:
        pace = f"took {walls}"
    return (
        f"The registry answered 401 {_times(a.responses_401)} with aociauth's defaults and "
        f"{_times(b.responses_401)} with the original's policy; it got {fewer} requests, "
        f"and the pull {pace}."
    )


def render_plain(result: DemoResult, out: TextIO) -> None:
    """The figures as an aligned plain-text table."""
    heads = [_TITLES.get(run.policy, run.policy) for run in result.runs]
    cells = [[fmt(run) for run in result.runs] for _, fmt in _ROWS]
    first = max(len(name) for name, _ in _ROWS)
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(heads)]
    print(_headline(result), file=out)
    print(file=out)
    print(
        " " * first + "".join(f"  {h:>{w}}" for h, w in zip(heads, widths, strict=True)), file=out
    )
    for (name, _), row in zip(_ROWS, cells, strict=True):
        print(
            f"{name:<{first}}" + "".join(f"  {c:>{w}}" for c, w in zip(row, widths, strict=True)),
            file=out,
        )
    print(file=out)
    print(_summary(result), file=out)


def _render_rich(result: DemoResult, out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out)
    table = Table(title="aociauth demo", title_justify="left")
    table.add_column("")
    for run in result.runs:
        table.add_column(_TITLES.get(run.policy, run.policy), justify="right")
    for name, fmt in _ROWS:
        table.add_row(name, *(fmt(run) for run in result.runs))
    console.print(_headline(result))
    console.print(table)
    console.print(_summary(result))


def _run_with_progress(options: DemoOptions, err: TextIO) -> DemoResult:
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    except ImportError:
        return _run_with_plain_progress(options, err)
    from rich.console import Console

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=err),
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(policy: str, done: int, total: int) -> None:
            if policy not in tasks:
                label = f"pulling: {_TITLES.get(policy, policy)}"
                tasks[policy] = bar.add_task(label, total=total)
            bar.update(tasks[policy], completed=done)

        return asyncio.run(run_demo(options, progress))


def _run_with_plain_progress(options: DemoOptions, err: TextIO) -> DemoResult:
    step = max(1, options.repos // 10)

    def progress(policy: str, done: int, total: int) -> None:
        if done % step == 0 or done == total:
            print(f"pulling: {_TITLES.get(policy, policy)}: {done}/{total}", file=err)

    return asyncio.run(run_demo(options, progress))


def main(options: DemoOptions, *, out: TextIO | None = None, as_json: bool = False) -> int:
    """Run the demo and print the figures (JSON with ``as_json``); 1 if any pull failed."""
    out = out if out is not None else sys.stdout
    if as_json:
        result = asyncio.run(run_demo(options))
        json.dump(result.as_dict(), out, indent=2)
        out.write("\n")
    else:
        result = _run_with_progress(options, sys.stderr)
        try:
            _render_rich(result, out)
        except ImportError:
            render_plain(result, out)
    return 1 if any(run.failed for run in result.runs) else 0
