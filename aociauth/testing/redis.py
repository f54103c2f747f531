"""Run Debian's ``redis-server`` for tests: one server, or a small Redis Cluster.

:class:`RedisServer` starts the real binary on 127.0.0.1 and a free port, in
a temporary directory that holds its configuration and its log, with
persistence off (``save ""``, ``appendonly no``), and stops it on exit,
whatever happened inside the ``async with`` block::

    async with RedisServer() as server:
        store = RedisTokenStore.from_url(server.url, key=key)
        ...
        await server.kill()      # Redis dies mid-run
        await server.start()     # and comes back, on the same port

:meth:`RedisServer.pause` and :meth:`RedisServer.resume` stop and continue the
process (SIGSTOP, SIGCONT): a Redis that accepts connections and never
answers. :class:`RedisClusterServers` runs three masters joined into a
cluster with ``redis-cli --cluster create``. Tests skip when
:func:`find_redis_server` finds no binary.

Readiness is checked with a plain ``PING`` over a socket, so this module needs
no Redis client library.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from aociauth.errors import OCIAuthError

__all__ = ["RedisClusterServers", "RedisServer", "RedisStartError", "find_redis_server"]

_BINARY_NAME = "redis-server"
_POLL_INTERVAL = 0.02
_LOG_TAIL_LINES = 30
_PORT_ATTEMPTS = 5
_CLUSTER_BUS_OFFSET = 10_000


class RedisStartError(OCIAuthError):
    """``redis-server`` could not be started or did not answer in time.

    The message ends with the tail of the server's log.
    """

    def __init__(self, message: str):
        super().__init__(message, step="redis")


def find_redis_server() -> str | None:
    """Return the path of ``redis-server`` on PATH, or None when it is not installed."""
    return shutil.which(_BINARY_NAME)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port(cluster: bool) -> int:
    """A port the kernel calls free; for a cluster node, one whose bus port is free too.

    redis-server has no "port 0, tell me which": the port is handed over, and a
    start that loses the race for it is retried. A cluster node also listens on
    its port + 10000, so its port must be at most 55535.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not cluster:
            return port
        if port + _CLUSTER_BUS_OFFSET > 65535:
            port -= _CLUSTER_BUS_OFFSET * 2  # from the ephemeral range down to a quieter one
        if port > 1024 and _port_is_free(port) and _port_is_free(port + _CLUSTER_BUS_OFFSET):
            return port
    raise RedisStartError("found no free port pair for a cluster node")


def _resp(*args: str) -> bytes:
    """A command in the Redis protocol (RESP) array form."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class RedisServer:
    """An async context manager running the real ``redis-server`` on loopback.

    ``password`` sets ``requirepass`` (written to the configuration file,
    never to the command line). ``cluster=True`` enables cluster mode (see
    :class:`RedisClusterServers`). ``config`` adds configuration directives.

    While running, :attr:`url` is ``redis://[:password@]127.0.0.1:PORT/0``.
    The process is stopped (SIGTERM, then SIGKILL) and its directory removed on
    exit, on error and on cancellation; a finalizer kills it at interpreter
    exit should the block never be left, and on Linux the kernel kills it if
    the Python process dies first.
    """

    def __init__(
        self,
        *,
        password: str | None = None,
        cluster: bool = False,
        config: dict[str, str] | None = None,
        binary: str | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self._password = password
        self._cluster = cluster
        self._config = dict(config or {})
        self._binary = binary
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._dir: Path | None = None
        self._process: anyio.abc.Process | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._port: int | None = None
        self._final_log = ""

    def __repr__(self) -> str:
        where = f"127.0.0.1:{self._port}" if self.running else "not running"
        return f"<RedisServer {where}>"

    @property
    def running(self) -> bool:
        """True while the process runs (also while paused)."""
        return self._process is not None

    @property
    def port(self) -> int:
        """The TCP port; kept across :meth:`kill` and :meth:`start`."""
        if self._port is None:
            raise RuntimeError("the Redis server was never started")
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        auth = f":{self._password}@" if self._password else ""
        return f"redis://{auth}{self.host}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        return self._process.pid if self._process is not None else None

    def log_text(self) -> str:
        """The server's log so far (its last log once it has stopped)."""
        if self._dir is None:
            return self._final_log
        try:
            return (self._dir / "redis.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def __aenter__(self) -> RedisServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the server: on a free port the first time, on the same port afterwards.

        An empty server each time (persistence is off).
        """
        if self._process is not None:
            raise RuntimeError("this RedisServer is already running")
        binary = self._binary or find_redis_server()
        if binary is None:
            raise RedisStartError(f"{_BINARY_NAME} is not installed (Debian: redis-server)")
        fixed = self._port is not None
        for _ in range(1 if fixed else _PORT_ATTEMPTS):
            if not fixed:
                self._port = _free_port(self._cluster)
            try:
                await self._start_once(binary)
                return
            except RedisStartError as exc:
                if fixed or "Address already in use" not in str(exc):
                    raise
        raise RedisStartError("redis-server found no free port")

    async def _start_once(self, binary: str) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="aociauth-redis-"))
        try:
            await self._spawn(binary, self._write_config(self._dir))
            with anyio.fail_after(self._start_timeout):
                await self._wait_ready()
        except TimeoutError:
            message = f"redis-server did not answer within {self._start_timeout} s"
            err = RedisStartError(self._with_log_tail(message))
            await self.stop()
            raise err from None
        except BaseException:
            await self.stop()
            raise

    def _write_config(self, directory: Path) -> Path:
        lines = {
            "port": str(self._port),
            "bind": "127.0.0.1",
            "daemonize": "no",
            "save": '""',
            "appendonly": "no",
            "dir": str(directory),
            "logfile": str(directory / "redis.log"),
            "loglevel": "notice",
        }
        if self._password:
            lines["requirepass"] = self._password
        if self._cluster:
            lines["cluster-enabled"] = "yes"
            lines["cluster-config-file"] = str(directory / "nodes.conf")
            lines["cluster-node-timeout"] = "2000"
        lines.update(self._config)
        path = directory / "redis.conf"
        path.write_text("".join(f"{k} {v}\n" for k, v in lines.items()))
        path.chmod(0o600)
        return path

    async def _spawn(self, binary: str, config: Path) -> None:
        assert self._dir is not None
        command = [binary, str(config)]
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            # The kernel kills the server if this process dies without unwinding.
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        self._process = await anyio.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self._dir,
        )
        self._finalizer = weakref.finalize(
            self, _last_resort_cleanup, self._process.pid, str(self._dir)
        )

    async def command(self, *args: str) -> bytes:
        """Send one command over a fresh connection and return the first reply line."""
        stream = await anyio.connect_tcp("127.0.0.1", self.port)
        async with stream:
            if self._password:
                await stream.send(_resp("AUTH", self._password))
                await _read_line(stream)
            await stream.send(_resp(*args))
            return await _read_reply(stream)

    async def _wait_ready(self) -> None:
        assert self._process is not None
        while True:
            if self._process.returncode is not None:
                raise RedisStartError(self._with_log_tail("redis-server exited"))
            try:
                if (await self.command("PING")).startswith(b"+PONG"):
                    return
            except OSError:
                pass
            await anyio.sleep(_POLL_INTERVAL)

    async def kill(self) -> None:
        """Kill the server (SIGKILL) and wait for it: a crash, nothing saved."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)  # a paused process dies either way; be tidy
            process.kill()
        await process.wait()
        self._cleanup_dir()

    def pause(self) -> None:
        """Stop the process (SIGSTOP): connections open, nothing answers."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Continue a paused process (SIGCONT)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its directory."""
        # Shielded: a cancelled test must still wait for the process it started.
        with anyio.CancelScope(shield=True):
            process, self._process = self._process, None
            if process is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                await _terminate(process, self._stop_timeout)
            self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._dir is not None:
            self._final_log = self.log_text()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _with_log_tail(self, message: str) -> str:
        tail = "\n".join(self.log_text().splitlines()[-_LOG_TAIL_LINES:])
        return f"{message}; its log ends:\n{tail}"


class RedisClusterServers:
    """Three ``redis-server`` masters joined into a Redis Cluster, on loopback.

    :attr:`url` names the first node; a cluster client finds the others.
    :attr:`nodes` are the :class:`RedisServer` instances.
    """

    def __init__(self, *, masters: int = 3, binary: str | None = None) -> None:
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least three masters")
        self.nodes = [RedisServer(cluster=True, binary=binary) for _ in range(masters)]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the first node."""
        return f"redis://{self.nodes[0].host}"

    async def __aenter__(self) -> RedisClusterServers:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisStartError("redis-cli is not installed (Debian: redis-tools)")
        try:
            for node in self.nodes:
                await node.start()
            hosts = [node.host for node in self.nodes]
            done = await anyio.run_process(
                [cli, "--cluster", "create", *hosts, "--cluster-replicas", "0", "--cluster-yes"],
                check=False,
            )
            if done.returncode != 0:
                output = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
                raise RedisStartError(f"redis-cli --cluster create failed:\n{output}")
            with anyio.fail_after(20):
                for node in self.nodes:
                    await _wait_cluster_ok(node)
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        for node in self.nodes:
            await node.stop()


async def _wait_cluster_ok(node: RedisServer) -> None:
    # The nodes learn of each other by gossip: nothing to await but their word.
    while b"cluster_state:ok" not in await node.command("CLUSTER", "INFO"):  # noqa: ASYNC110
        await anyio.sleep(_POLL_INTERVAL * 5)


async def _read_line(stream: anyio.abc.ByteStream) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = await stream.receive(1)
        data += chunk
    return data


async def _read_reply(stream: anyio.abc.ByteStream) -> bytes:
    """A reply's first line, or the whole body of a bulk string (``$N``)."""
    line = await _read_line(stream)
    if not line.startswith(b"$") or line.startswith(b"$-1"):
        return line
    size = int(line[1:].strip())
    body = b""
    while len(body) < size + 2:
        body += await stream.receive(size + 2 - len(body))
    return body[:size]


async def _terminate(process: anyio.abc.Process, grace: float) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with anyio.move_on_after(grace):
            await process.wait()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    await process.wait()


def _last_resort_cleanup(pid: int, directory: str) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    shutil.rmtree(directory, ignore_errors=True)
