"""What every scenario shares: tables, plots, request counting, a stub registry in a subprocess."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import multiprocessing.connection
import secrets
import socket
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

import aociauth

if TYPE_CHECKING:
    from aociauth.testing.registry import Registry
    from aociauth.testing.tokenserver import TokenServer

RESULTS_DIR = Path(__file__).resolve().parent / "results"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

# --- reporting -------------------------------------------------------------------


@dataclass
class Table:
    """A titled table of rows, printable as aligned plain text or as Markdown."""

    title: str
    columns: Sequence[str]
    rows: list[Sequence[object]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        """Append a row (cells are turned into text when printed)."""
        self.rows.append(cells)

    def _cells(self) -> list[list[str]]:
        return [[str(c) for c in row] for row in self.rows]

    def text(self) -> str:
        """Aligned plain text: the first column left-aligned, the others right-aligned."""
        rows = self._cells()
        widths = [len(c) for c in self.columns]
        for row in rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

        def line(cells: Sequence[str]) -> str:
            out = [cells[0].ljust(widths[0])]
            out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join(out).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([self.title, line(list(self.columns)), rule, *map(line, rows)])

    def markdown(self) -> str:
        """A Markdown table with the title as a bold line above it."""
        head = "| " + " | ".join(self.columns) + " |"
        align = "| :--- | " + " | ".join("---:" for _ in self.columns[1:]) + " |"
        body = ["| " + " | ".join(row) + " |" for row in self._cells()]
        return "\n".join([f"**{self.title}**", "", head, align, *body])


@dataclass
class Report:
    """What one scenario measured: its tables, its plots and what to read in them."""

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def text(self) -> str:
        """The report as plain text, for the terminal."""
        parts = [f"== {self.title} ({self.name}, {self.seconds:.1f} s) =="]
        parts += [t.text() for t in self.tables]
        parts += [f"plot: {p.relative_to(RESULTS_DIR.parent.parent)}" for p in self.plots]
        parts += [f"note: {n}" for n in self.notes]
        return "\n\n".join(parts)

    def markdown(self) -> str:
        """The report as Markdown, for results/summary.md."""
        parts = [f"## {self.title}", f"`python -m benchmarks {self.name}` ({self.seconds:.1f} s)"]
        parts += [t.markdown() for t in self.tables]
        parts += [f"![{p.stem}]({p.name})" for p in self.plots]
        parts += [f"- {n}" for n in self.notes]
        return "\n\n".join(parts)


def ms(seconds: float) -> str:
    """Seconds as milliseconds, one decimal."""
    return f"{seconds * 1000:.1f}"


def us(seconds: float) -> str:
    """Seconds as microseconds, one decimal."""
    return f"{seconds * 1e6:.1f}"


def median(values: Sequence[float]) -> float:
    """The median (the middle of the sorted values; the mean of the two middle ones)."""
    return statistics.median(values)


Series = dict[str, tuple[Sequence[float], Sequence[float]]]


def plot_panels(
    filename: str,
    title: str,
    xlabel: str,
    panels: Sequence[tuple[str, Series]],
    *,
    logy: bool = False,
) -> Path:
    """Draw panels side by side, one line per series, to results/FILENAME (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(panels), figsize=(1 + 4.6 * len(panels), 4.2), dpi=110)
    axes_list = list(axes) if len(panels) > 1 else [axes]
    for ax, (ylabel, series) in zip(axes_list, panels, strict=True):
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o" if len(xs) <= 20 else "", markersize=4, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logy:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = RESULTS_DIR / filename
    fig.savefig(path)
    plt.close(fig)
    return path


# --- measuring ---------------------------------------------------------------------


@dataclass
class Measured:
    """Wall-clock and process CPU seconds of one timed block."""

    wall: float
    cpu: float


async def timed(work: Callable[[], Awaitable[Any]]) -> Measured:
    """Run ``work()`` once, after a garbage collection, and time it (wall and CPU)."""
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    await work()
    return Measured(time.perf_counter() - w0, time.process_time() - c0)


def password_config(host: str, username: str, password: str) -> aociauth.ConfigFile:
    """A docker config holding one ``auths`` entry, as ``docker login`` would write it."""
    return aociauth.ConfigFile.from_dict(
        {"auths": {host: {"username": username, "password": password}}}, source="benchmark"
    )


USER, PASSWORD = "bench", "bench-password"


@asynccontextmanager
async def bearer_registry(
    repositories: Sequence[str], *, token_latency: float = 0.0
) -> AsyncIterator[tuple[Registry, TokenServer]]:
    """The in-process bearer registry and its token server, each repository seeded with an image.

    The user :data:`USER` may pull and push everything; requests are counted,
    not recorded, so a long run does not keep every request in memory.
    """
    from aociauth.testing.registry import Registry
    from aociauth.testing.tokenserver import TokenServer

    async with TokenServer(users={USER: PASSWORD}, latency=token_latency) as ts:
        registry = Registry(auth="bearer", token_server=ts, record_requests=False)
        for repository in repositories:
            registry.seed_image(repository, "v1")
        async with registry:
            yield registry, ts


def reset_counters(registry: Registry, ts: TokenServer) -> None:
    """Zero both servers' counters and forget what the token server recorded."""
    registry.reset_counters()
    ts.reset_counters()


def auth_session(mw: aociauth.AuthMiddleware) -> aiohttp.ClientSession:
    """A session whose requests go through ``mw``."""
    return aiohttp.ClientSession(middlewares=(mw,))


async def pull_manifest(
    session: aiohttp.ClientSession,
    base: str,
    repository: str,
    headers: dict[str, str] | None = None,
) -> None:
    """GET ``repository:v1``'s OCI manifest; anything but 200 is an error."""
    url = f"{base}/v2/{repository}/manifests/v1"
    async with session.get(url, headers={"Accept": OCI_MANIFEST, **(headers or {})}) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {url} answered {resp.status}")


def run_async(main: Awaitable[Any]) -> Any:
    """Run a coroutine on a fresh event loop (each scenario gets its own)."""
    return asyncio.run(main)  # type: ignore[arg-type]


# --- a stub registry in a process of its own ---------------------------------------


def _stub_app(port_holder: list[int]) -> web.Application:
    """A registry that wants any Bearer token and a token endpoint that hands out random ones.

    It checks nothing but the scheme: it is here to cost the client as little
    server time as possible, not to be a registry.
    """

    def challenge(request: web.Request, scope: str | None) -> web.Response:
        realm = f"http://127.0.0.1:{port_holder[0]}/token"
        value = f'Bearer realm="{realm}",service="stub"'
        if scope:
            value += f',scope="{scope}"'
        return web.Response(status=401, headers={"WWW-Authenticate": value})

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"token": secrets.token_urlsafe(24), "expires_in": 3600})

    async def base(request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return challenge(request, None)
        return web.json_response({})

    async def manifest(request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return challenge(request, f"repository:{request.match_info['name']}:pull")
        return web.Response(body=b'{"schemaVersion":2}', content_type=OCI_MANIFEST)

    app = web.Application()
    app.router.add_get("/token", token)
    app.router.add_get("/v2/", base)
    app.router.add_get("/v2/{name:.+}/manifests/{ref}", manifest)
    return app


def _serve_stub(conn: multiprocessing.connection.Connection) -> None:
    """Child process: serve the stub until the parent says stop or goes away."""

    async def main() -> None:
        port_holder = [0]
        runner = web.AppRunner(_stub_app(port_holder), access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port_holder[0] = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        conn.send(port_holder[0])
        loop = asyncio.get_running_loop()
        # EOFError when the parent is gone: stop too.
        with suppress(EOFError):
            await loop.run_in_executor(None, conn.recv)
        await runner.cleanup()

    asyncio.run(main())


class StubServer:
    """The stub registry of :func:`_stub_app` in a separate process, so its CPU is not ours.

    ``with StubServer() as stub:`` gives ``stub.url``; the process is stopped on exit.
    """

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_stub, args=(child,), daemon=True)
        self._child = child
        self.url = ""

    def __enter__(self) -> StubServer:
        self._proc.start()
        self._child.close()
        if not self._conn.poll(30):
            self._stop()
            raise RuntimeError("the stub server did not start within 30 s")
        self.url = f"http://127.0.0.1:{self._conn.recv()}"
        return self

    @property
    def pid(self) -> int:
        """The stub's process id (to pin it to a CPU, say)."""
        pid = self._proc.pid
        if pid is None:
            raise RuntimeError("the stub server is not running")
        return pid

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        with suppress(OSError):
            self._conn.send("stop")
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._conn.close()
