"""Run Debian's reference registry (distribution 2.8, ``docker-registry``) for tests.

:class:`DistributionRegistry` starts the real binary on 127.0.0.1 with a port
the kernel picks, in a temporary directory that holds its configuration, its
filesystem storage and its log, and stops it again on exit, whatever happened
inside the ``async with`` block::

    async with DistributionRegistry(auth="htpasswd", users={"alice": "s3cret"}) as reg:
        async with session.get(f"{reg.url}/v2/") as resp:
            ...

The registry is open (``auth=None``), checks Basic credentials against a
bcrypt htpasswd file (``auth="htpasswd"``), or accepts bearer tokens signed by
a key whose certificate chains to ``rootcertbundle`` (``auth="token"``).
Its peculiarities are listed in the project's notes on distribution 2.8.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal

import aiohttp
import anyio
import anyio.abc

from aociauth.errors import OCIAuthError

__all__ = ["DistributionRegistry", "RegistryStartError", "find_binary"]

AuthMode = Literal["htpasswd", "token"]

_BINARY_NAME = "docker-registry"
# distribution logs the bound address, so ``127.0.0.1:0`` needs no port guessing.
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
_POLL_INTERVAL = 0.02
_LOG_TAIL_LINES = 40
# Go's bcrypt accepts cost 4 and up; the lowest keeps htpasswd checks cheap in tests.
_BCRYPT_ROUNDS = 4


class RegistryStartError(OCIAuthError):
    """The registry binary could not be started or did not answer in time.

    The message ends with the tail of the registry's log.
    """

    def __init__(self, message: str):
        super().__init__(message, step="registry")


def find_binary() -> str | None:
    """Return the path of ``docker-registry`` on PATH, or None when it is not installed."""
    return shutil.which(_BINARY_NAME)


class DistributionRegistry:
    """An async context manager running the real ``docker-registry`` on loopback.

    ``auth`` picks the mode: None for an open registry; ``"htpasswd"`` with
    ``users`` (name to password) for Basic authentication; ``"token"`` with
    ``realm``, ``service``, ``issuer`` and ``rootcertbundle`` (PEM certificates)
    for bearer tokens. ``realm`` is also the Basic realm in htpasswd mode.
    Storage deletion is disabled, as in the registry's default configuration.

    While running, :attr:`url` is ``http://127.0.0.1:PORT`` and :attr:`host`
    is ``127.0.0.1:PORT``. :meth:`log_text` returns the registry's log, also
    after exit. The process is stopped (SIGTERM, then SIGKILL) and its
    directory removed on exit, on error and on cancellation; a finalizer kills
    it at interpreter exit should the block never be left, and on Linux the
    kernel kills it if the Python process dies first.
    """

    def __init__(
        self,
        *,
        auth: AuthMode | None = None,
        users: Mapping[str, str] | None = None,
        realm: str | None = None,
        service: str | None = None,
        issuer: str | None = None,
        rootcertbundle: bytes | None = None,
        binary: str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        _check_mode(auth, users, realm, service, issuer, rootcertbundle)
        self.auth = auth
        self.realm = realm if realm is not None else "aociauth-test"
        self.service = service
        self.issuer = issuer
        self._users = MappingProxyType(dict(users or {}))
        self._rootcertbundle = rootcertbundle
        self._binary = binary
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._dir: Path | None = None
        self._process: anyio.abc.Process | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._port: int | None = None
        self._final_log = ""

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not running"
        return f"<DistributionRegistry auth={self.auth!r} {where}>"

    @property
    def url(self) -> str:
        """The registry's base URL, ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    @property
    def host(self) -> str:
        """The registry's ``host:port``, as it appears in image references."""
        if self._port is None:
            raise RuntimeError("the registry is not running")
        return f"127.0.0.1:{self._port}"

    @property
    def users(self) -> Mapping[str, str]:
        """The htpasswd mode's user names and passwords (empty in the other modes)."""
        return self._users

    @property
    def directory(self) -> Path | None:
        """The temporary directory holding configuration, storage and log, while running."""
        return self._dir

    @property
    def pid(self) -> int | None:
        """The registry process's id while it runs, else None."""
        return self._process.pid if self._process is not None else None

    def log_text(self) -> str:
        """Return the registry's log so far (its last log once it has stopped)."""
        if self._dir is None:
            return self._final_log
        try:
            return (self._dir / "registry.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    async def __aenter__(self) -> DistributionRegistry:
        if self._dir is not None:
            raise RuntimeError("this DistributionRegistry is already running")
        binary = self._binary or find_binary()
        if binary is None:
            raise RegistryStartError(f"{_BINARY_NAME} is not installed (Debian: docker-registry)")
        self._dir = Path(tempfile.mkdtemp(prefix="aociauth-registry-"))
        try:
            config = self._write_files(self._dir)
            await self._spawn(binary, config)
            with anyio.fail_after(self._start_timeout):
                await self._wait_ready()
        except TimeoutError:
            message = f"the registry did not answer within {self._start_timeout} s"
            err = RegistryStartError(self._with_log_tail(message))
            await self._stop()
            raise err from None
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

    def _write_files(self, directory: Path) -> Path:
        storage = directory / "data"
        storage.mkdir()
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(storage)},
                "delete": {"enabled": False},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            # A secret of our own silences the "no HTTP secret" warning.
            "http": {"addr": "127.0.0.1:0", "secret": secrets.token_hex(16)},
        }
        if self.auth == "htpasswd":
            path = directory / "htpasswd"
            path.write_text("".join(_htpasswd_line(u, p) for u, p in self._users.items()))
            config["auth"] = {"htpasswd": {"realm": self.realm, "path": str(path)}}
        elif self.auth == "token":
            assert self._rootcertbundle is not None
            path = directory / "rootcerts.pem"
            path.write_bytes(self._rootcertbundle)
            config["auth"] = {
                "token": {
                    "realm": self.realm,
                    "service": self.service,
                    "issuer": self.issuer,
                    "rootcertbundle": str(path),
                }
            }
        config_path = directory / "config.yml"
        # JSON is YAML, and spares a YAML dependency.
        config_path.write_text(json.dumps(config, indent=2))
        return config_path

    async def _spawn(self, binary: str, config: Path) -> None:
        assert self._dir is not None
        command = [binary, "serve", str(config)]
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            # The kernel kills the registry if this process dies without unwinding
            # (SIGKILL, os._exit from a hard test timeout).
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        # REGISTRY_* variables override the configuration file.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with (self._dir / "registry.log").open("wb") as log:
            self._process = await anyio.open_process(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self._dir, env=env
            )
        self._finalizer = weakref.finalize(
            self, _last_resort_cleanup, self._process.pid, str(self._dir)
        )

    async def _wait_ready(self) -> None:
        assert self._process is not None
        while self._port is None:
            if self._process.returncode is not None:
                raise RegistryStartError(self._exited_message())
            match = _LISTENING.search(self.log_text())
            if match:
                self._port = int(match.group(1))
            else:
                await anyio.sleep(_POLL_INTERVAL)
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if self._process.returncode is not None:
                    raise RegistryStartError(self._exited_message())
                try:
                    async with session.get(f"{self.url}/v2/") as resp:
                        await resp.read()
                        return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    await anyio.sleep(_POLL_INTERVAL)

    async def _stop(self) -> None:
        # Shielded: a cancelled test must still wait for the process it started.
        with anyio.CancelScope(shield=True):
            process, self._process = self._process, None
            if process is not None:
                await _terminate(process, self._stop_timeout)
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            if self._dir is not None:
                self._final_log = self.log_text()
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
            self._port = None

    def _exited_message(self) -> str:
        assert self._process is not None
        message = f"the registry exited with status {self._process.returncode}"
        return self._with_log_tail(message)

    def _with_log_tail(self, message: str) -> str:
        tail = "\n".join(self.log_text().splitlines()[-_LOG_TAIL_LINES:])
        return f"{message}; its log ends:\n{tail}"


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


def _htpasswd_line(user: str, password: str) -> str:
    try:
        import bcrypt
    except ImportError:  # pragma: no cover - depends on the environment
        raise RegistryStartError(
            "htpasswd mode needs the bcrypt package: pip install 'aociauth[testing]'"
        ) from None
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=_BCRYPT_ROUNDS))
    return f"{user}:{hashed.decode()}\n"


def _check_mode(
    auth: AuthMode | None,
    users: Mapping[str, str] | None,
    realm: str | None,
    service: str | None,
    issuer: str | None,
    rootcertbundle: bytes | None,
) -> None:
    token_args = {"service": service, "issuer": issuer, "rootcertbundle": rootcertbundle}
    if auth is None:
        given = [k for k, v in {"users": users, "realm": realm, **token_args}.items() if v]
        if given:
            raise ValueError(f"an open registry takes no {', '.join(given)}")
    elif auth == "htpasswd":
        if not users:
            raise ValueError("htpasswd mode needs users")
        for user in users:
            if not user or ":" in user or any(c in user for c in "\r\n"):
                raise ValueError(f"unusable htpasswd user name {user!r}")
        given = [k for k, v in token_args.items() if v]
        if given:
            raise ValueError(f"htpasswd mode takes no {', '.join(given)}")
    elif auth == "token":
        missing = [k for k, v in {"realm": realm, **token_args}.items() if not v]
        if missing:
            raise ValueError(f"token mode needs {', '.join(missing)}")
        if users:
            raise ValueError("token mode takes no users")
    else:
        raise ValueError(f"unknown auth mode {auth!r}")
