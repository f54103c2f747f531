"""``aociauth demo --fleet N``: N worker processes pull the same images, with and without
the shared token cache, and the token requests saved are counted.

:func:`run_fleet_demo` starts the demo's in-process token server and bearer
registry on 127.0.0.1, seeds ``repos`` images, and runs a fleet of ``N`` OS
processes (``python -m aociauth.fleet_demo``), each a cold middleware pulling
every image's manifest, all released at once: first each on its own, then
sharing tokens through a :class:`~aociauth.redis.RedisTokenStore`. The Redis
is ``redis_url`` when given, else a ``redis-server`` started for the demo
(:class:`~aociauth.testing.redis.RedisServer`, persistence off) when the binary
is installed; with neither, the fleet runs alone and the demo says what a
shared cache would save and how to get one. Every figure is measured: the
workers' :class:`~aociauth.AuthStats`, the store's stats, and the token
server's own counter.

A worker reads its orders (including the fleet key, never on its command
line) as one JSON line on standard input, prints ``ready``, waits for ``go``,
pulls, and prints its figures as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

__all__ = ["FleetOptions", "FleetResult", "FleetRun", "main", "render_plain", "run_fleet_demo"]

_USER = "demo"
_MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"
#: Seconds a worker may take to start (imports included) and to pull.
_START_TIMEOUT = 120.0
_RUN_TIMEOUT = 600.0


@dataclass(frozen=True)
class FleetOptions:
    """The fleet: ``processes`` workers, each pulling the manifests of ``repos`` images,
    ``concurrency`` at a time, from a token server taking ``latency_ms`` per request.
    ``redis_url``: the Redis to share through (None: start one, if installed)."""

    processes: int = 4
    repos: int = 200
    concurrency: int = 32
    latency_ms: float = 20.0
    redis_url: str | None = None

    def __post_init__(self) -> None:
        if self.processes < 1 or self.repos < 1 or self.concurrency < 1:
            raise ValueError("processes, repos and concurrency must be at least 1")
        if not (self.latency_ms >= 0 and self.latency_ms != float("inf")):
            raise ValueError("latency_ms must be a finite number, not negative")


@dataclass(frozen=True)
class FleetRun:
    """What one fleet run measured, summed over its processes."""

    #: ``"alone"`` (no shared cache) or ``"shared"``.
    mode: str
    processes: int
    pulled: int
    failed: int
    #: Token requests the workers sent, and those the token server received.
    token_requests: int
    token_server_requests: int
    #: Tokens the workers took from the shared cache instead of a token server.
    shared_hits: int
    #: The slowest worker's time from its release to its last pull.
    wall_time_s: float
    #: The stores' counters (``SharedCacheStats``), summed; empty when alone.
    store: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetResult:
    """The options, where the shared cache was (None: nowhere), and the runs in order."""

    options: FleetOptions
    redis: str | None
    runs: tuple[FleetRun, ...]

    def as_dict(self) -> dict[str, Any]:
        """A plain copy for JSON; ``runs`` maps each mode to its figures."""
        options = asdict(self.options)
        options.pop("redis_url")  # may hold a password
        return {
            "options": options,
            "redis": self.redis,
            "runs": {run.mode: asdict(run) for run in self.runs},
        }


async def _start_worker(orders: dict[str, Any]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aociauth.fleet_demo",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(orders).encode() + b"\n")
    await proc.stdin.drain()
    return proc


async def _line(proc: asyncio.subprocess.Process, timeout: float) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    if not line:
        raise RuntimeError(f"a fleet worker ended early (exit code {await proc.wait()})")
    return line.decode().strip()


async def _fleet(mode: str, orders: dict[str, Any], processes: int, token_server: Any) -> FleetRun:
    """Run ``processes`` workers with ``orders``, released together; sum their figures."""
    token_server.reset_counters()
    procs = [await _start_worker(orders) for _ in range(processes)]
    try:
        for proc in procs:
            if await _line(proc, _START_TIMEOUT) != "ready":
                raise RuntimeError("a fleet worker did not get ready")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        await asyncio.gather(*(proc.stdin.drain() for proc in procs if proc.stdin is not None))
        figures = [json.loads(await _line(proc, _RUN_TIMEOUT)) for proc in procs]
        for proc in procs:
            await proc.wait()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    store: dict[str, int] = {}
    for f in figures:
        for name, value in f["store"].items():
            store[name] = store.get(name, 0) + value
    return FleetRun(
        mode=mode,
        processes=processes,
        pulled=sum(f["pulled"] for f in figures),
        failed=sum(f["failed"] for f in figures),
        token_requests=sum(f["token_requests"] for f in figures),
        token_server_requests=token_server.counters.requests,
        shared_hits=sum(f["shared_hits"] for f in figures),
        wall_time_s=max(f["wall_time_s"] for f in figures),
        store=store,
    )


async def run_fleet_demo(options: FleetOptions) -> FleetResult:
    """Start the servers (and a Redis if needed and installed), run the fleet alone and
    sharing, stop everything, and report."""
    from contextlib import AsyncExitStack

    from aociauth.testing.redis import RedisServer, find_redis_server
    from aociauth.testing.registry import Registry
    from aociauth.testing.tokenserver import TokenServer

    password = secrets.token_urlsafe(16)
    width = len(str(options.repos - 1))
    repositories = [f"demo/app-{i:0{width}d}" for i in range(options.repos)]
    async with AsyncExitStack() as stack:
        ts = await stack.enter_async_context(
            TokenServer(users={_USER: password}, latency=options.latency_ms / 1000)
        )
        registry = await stack.enter_async_context(
            Registry(auth="bearer", token_server=ts, record_requests=False)
        )
        for repository in repositories:
            registry.seed_image(repository)
        orders: dict[str, Any] = {
            "registry": registry.url,
            "host": registry.host,
            "password": password,
            "repositories": repositories,
            "concurrency": options.concurrency,
        }
        runs = [await _fleet("alone", orders, options.processes, ts)]
        url, where = options.redis_url, None
        if url is None and find_redis_server() is not None:
            server = await stack.enter_async_context(RedisServer())
            url, where = server.url, f"a redis-server started for the demo at {server.host}"
        elif url is not None:
            from aociauth.redis import _describe

            where = f"the Redis at {_describe(url)}"
        if url is not None:
            shared = {
                **orders,
                "redis": url,
                "key": secrets.token_hex(32),  # a fresh fleet: nothing of an earlier run
                "prefix": f"aociauth-demo-{secrets.token_hex(4)}",
            }
            runs.append(await _fleet("shared", shared, options.processes, ts))
        return FleetResult(options, where, tuple(runs))


# -- a worker ----------------------------------------------------------------------------


async def _work(orders: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    from aociauth.config import ConfigFile
    from aociauth.errors import OCIAuthError
    from aociauth.middleware import StdTransportParams, new_std_transport

    config = ConfigFile.from_dict(
        {"auths": {orders["host"]: {"username": _USER, "password": orders["password"]}}},
        source="<demo>",
    )
    store = None
    if "redis" in orders:
        from aociauth.redis import RedisTokenStore

        # A longer call timeout than the default: the workers, the servers and Redis
        # share this one machine, and a slow call only sends a worker to the token server.
        store = RedisTokenStore.from_url(
            orders["redis"],
            key=bytes.fromhex(orders["key"]),
            prefix=orders["prefix"],
            timeout=1.0,
        )
    params = StdTransportParams(config=config, shared_cache=store)
    todo = iter(orders["repositories"])
    pulled = failed = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal pulled, failed
        for repository in todo:
            url = f"{orders['registry']}/v2/{repository}/manifests/latest"
            try:
                async with session.get(url, headers={"Accept": _MANIFEST_ACCEPT}) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (aiohttp.ClientError, OCIAuthError):
                ok = False
            pulled += ok
            failed += not ok

    try:
        if store is not None:
            await store.get(_ping_identity(), "", _ping_scope())  # connected before the start
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        started = time.perf_counter()
        connector = aiohttp.TCPConnector(limit=orders["concurrency"])
        async with (
            new_std_transport(params) as mw,
            aiohttp.ClientSession(middlewares=[mw], connector=connector) as session,
        ):
            await asyncio.gather(*(worker(session) for _ in range(orders["concurrency"])))
        wall = time.perf_counter() - started
    finally:
        if store is not None:
            await store.aclose()
    return {
        "pulled": pulled,
        "failed": failed,
        "token_requests": mw.stats.total_token_requests,
        "shared_hits": mw.stats.shared_hits,
        "wall_time_s": wall,
        "store": store.stats.as_dict() if store is not None else {},
    }


def _ping_identity() -> Any:
    from aociauth.shared_cache import SharedIdentity

    return SharedIdentity("demo.invalid", "", "")


def _ping_scope() -> Any:
    from aociauth.scope import parse_scope

    return parse_scope("repository:demo/ping:pull")


def _worker_main() -> None:
    orders = json.loads(sys.stdin.readline())
    print(json.dumps(asyncio.run(_work(orders))), flush=True)


# -- showing it --------------------------------------------------------------------------

_TITLES = {"alone": "each process alone", "shared": "sharing tokens"}


def render_plain(result: FleetResult, out: TextIO) -> None:
    """The figures as a plain-text table, and what the shared cache saved (or would)."""
    o = result.options
    print(
        f"A fleet of {o.processes} worker processes, each pulling the manifests of {o.repos} "
        f"images from an in-process registry ({o.latency_ms:g} ms per token request), "
        f"{o.concurrency} at a time, all started cold and at once.",
        file=out,
    )
    print(file=out)
    rows: list[tuple[str, list[str]]] = [
        (
            "manifests pulled",
            [f"{r.pulled}" + (f" ({r.failed} failed)" if r.failed else "") for r in result.runs],
        ),
        ("token requests", [str(r.token_server_requests) for r in result.runs]),
        ("per process", [f"{r.token_requests / r.processes:.1f}" for r in result.runs]),
        ("tokens from the shared cache", [str(r.shared_hits) for r in result.runs]),
        ("slowest process", [f"{r.wall_time_s:.2f} s" for r in result.runs]),
    ]
    heads = [_TITLES[r.mode] for r in result.runs]
    first = max(len(name) for name, _ in rows)
    widths = [max(len(h), *(len(cells[i]) for _, cells in rows)) for i, h in enumerate(heads)]
    print(
        " " * first + "".join(f"  {h:>{w}}" for h, w in zip(heads, widths, strict=True)), file=out
    )
    for name, cells in rows:
        print(
            f"{name:<{first}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths, strict=True)),
            file=out,
        )
    print(file=out)
    alone = result.runs[0]
    if len(result.runs) > 1:
        shared = result.runs[1]
        saved = alone.token_server_requests - shared.token_server_requests
        share = saved / alone.token_server_requests if alone.token_server_requests else 0.0
        print(
            f"Sharing tokens through {result.redis}, the fleet asked the token server "
            f"{shared.token_server_requests} times instead of {alone.token_server_requests}: "
            f"{saved} requests saved ({share:.0%}).",
            file=out,
        )
        if shared.store.get("outages"):
            print(
                f"The shared cache failed {shared.store['outages']} time(s) during the run; "
                "the workers went on without it.",
                file=out,
            )
    else:
        # About what one process asks for (its misses may share token requests, so
        # fewer than one per repository); the other processes would find it in Redis.
        one = -(-alone.token_server_requests // o.processes)
        print(
            f"Each process asked the token server for its own tokens: "
            f"{alone.token_server_requests} requests. Sharing tokens through Redis, the fleet "
            f"would ask about as often as one process ({one}), saving about "
            f"{max(0, alone.token_server_requests - one)}. No Redis here: install "
            "redis-server (Debian: apt-get install redis-server) and run this again, or "
            "pass --redis redis://HOST:6379/0. See 'Running a fleet' in the README.",
            file=out,
        )


def main(options: FleetOptions, *, out: TextIO | None = None, as_json: bool = False) -> int:
    """Run the fleet demo and print the figures (JSON with ``as_json``); 1 if a pull failed."""
    out = out if out is not None else sys.stdout
    print(f"running {options.processes} worker processes...", file=sys.stderr)
    result = asyncio.run(run_fleet_demo(options))
    if as_json:
        json.dump(result.as_dict(), out, indent=2)
        out.write("\n")
    else:
        render_plain(result, out)
    return 1 if any(run.failed for run in result.runs) else 0


if __name__ == "__main__":
    _worker_main()
