"""Shared pieces of the hardening tests: names on loopback, TLS, canaries, leak checks.

Every server is on 127.0.0.1. :class:`LoopbackResolver` lets a session reach
them by name (``reg.test``, ``evil.test``, ...), so the realm policy and the
origin checks see different hosts, as they would on a network; nothing ever
resolves a name through DNS. :func:`tls_pair` makes a throwaway CA and a
certificate for those names, for the https cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

import aociauth
from aociauth.helpers import exec_helper_with_env
from aociauth.testing.tls import make_tls

T = TypeVar("T")

#: Secrets that must never show up anywhere but where they belong. Each is
#: long and distinctive, so finding one is never a coincidence.
PASSWORD = "canary-PASSWORD-7f3a91"
REFRESH_TOKEN = "canary-REFRESH-c0ffee42"
ACCESS_TOKEN = "canary-ACCESS-5eed5eed"
HELPER_SECRET = "canary-HELPER-d15ea5e"
SIGNATURE = "canary0signature0deadbeef"
CANARIES = (PASSWORD, REFRESH_TOKEN, ACCESS_TOKEN, HELPER_SECRET, SIGNATURE)

#: Seconds any single scenario may take before the test calls it a hang.
BOUND = 20.0

#: Names the resolver maps to 127.0.0.1.
NAMES = (
    "reg.test",
    "auth.test",
    "evil.test",
    "cdn.test",
    "reg.example.com",
    "auth.example.com",
    # Docker Hub's names, for the built-in trusted pair. Only ever resolved by
    # LoopbackResolver: no test reaches the real hosts.
    "registry-1.docker.io",
    "index.docker.io",
    "auth.docker.io",
)


class LoopbackResolver(AbstractResolver):
    """Resolves every name to 127.0.0.1 and counts what it was asked.

    ``localhost`` included: a session using it never touches ``::1`` or DNS.
    """

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


@dataclass
class TLS:
    """A server context for :data:`NAMES` and 127.0.0.1, and a client context trusting it."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def tls_pair() -> TLS:
    """A fresh CA and a leaf certificate for :data:`NAMES`, ``localhost`` and 127.0.0.1."""
    made = make_tls(NAMES, common_name="aociauth hardening CA")
    return TLS(made.server, made.client)


@dataclass
class Seen:
    """One request a scripted server received: everything a credential could hide in."""

    method: str
    host: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def text(self) -> str:
        """Everything recorded, as one string to search for canaries."""
        heads = "\n".join(f"{k}: {v}" for k, v in self.headers)
        return f"{self.method} {self.path}?{self.query}\n{heads}\n\n" + self.body.decode("latin-1")

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Scripted:
    """A running aiohttp test server whose handler is a plain function, recording all."""

    server: TestServer
    port: int
    seen: list[Seen] = field(default_factory=list)

    def url(self, path: str = "", host: str = "127.0.0.1") -> str:
        return f"{self.server.scheme}://{host}:{self.port}{path}"


Handler = Any  # Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def scripted(handler: Handler, *, tls: TLS | None = None) -> AsyncIterator[Scripted]:
    """Serve ``handler`` on 127.0.0.1 (over TLS with ``tls``), recording every request."""
    rec: Scripted

    async def record(req: web.Request) -> web.StreamResponse:
        body = await req.read()
        rec.seen.append(
            Seen(req.method, req.host, req.path, req.query_string, list(req.headers.items()), body)
        )
        result: web.StreamResponse = await handler(req)
        return result

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=tls.server if tls else None)
    assert server.port is not None
    rec = Scripted(server, server.port)
    try:
        yield rec
    finally:
        await server.close()


def assert_no_credentials(requests: Iterable[Any], *, where: str = "server") -> None:
    """Nothing credential-like in any recorded request (a :class:`Seen` or a RecordedRequest)."""
    for r in requests:
        if isinstance(r, Seen):
            text = r.text()
            names = {k.lower() for k, _ in r.headers}
        else:
            heads = "\n".join(f"{k}: {v}" for k, v in r.headers.items())
            text = f"{r.path}?{'&'.join(f'{k}={v}' for k, v in r.query.items())}\n{heads}\n"
            text += r.body.decode("latin-1")
            names = {k.lower() for k in r.headers}
        for header in ("authorization", "proxy-authorization", "cookie"):
            assert header not in names, f"{where} received {header} on {r.method} {r.path}"
        for canary in CANARIES:
            assert canary not in text, f"{where} received a secret on {r.method} {r.path}"
        for field_name in ("password=", "refresh_token=", "access_token="):
            assert field_name not in text, f"{where} received {field_name} on {r.path}"


def exception_texts(exc: BaseException) -> str:
    """str, repr and the formatted traceback of an exception and everything it chains to."""
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        parts += [str(cur), repr(cur)]
        for attr in ("request_info", "history", "headers", "message", "url"):
            value = getattr(cur, attr, None)
            if value is not None:
                parts.append(repr(value))
        cur = cur.__cause__ or cur.__context__
    parts.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return "\n".join(parts)


def assert_clean(text: str, *secrets: str) -> None:
    """None of the canaries (and none of ``secrets``) appear in ``text``."""
    for s in (*CANARIES, *secrets):
        if s:
            assert s not in text, f"a secret ({s[:8]}...) leaked"


async def bounded(aw: Awaitable[T], seconds: float = BOUND) -> T:
    """``aw``, or a failure (TimeoutError) if it takes longer than ``seconds``: no test hangs."""
    return await asyncio.wait_for(aw, seconds)


def connector() -> aiohttp.TCPConnector:
    """A connector that reaches every name on 127.0.0.1 (see :class:`LoopbackResolver`)."""
    return aiohttp.TCPConnector(resolver=LoopbackResolver())


@contextlib.asynccontextmanager
async def client(
    config: aociauth.Config | None,
    *,
    tls: TLS | None = None,
    session_kw: dict[str, Any] | None = None,
    **params: Any,
) -> AsyncIterator[tuple[aociauth.AuthMiddleware, aiohttp.ClientSession]]:
    """A middleware and a session through it; both resolve names to loopback.

    The middleware's token requests go through a session of their own that
    also resolves names to loopback (and trusts ``tls``'s CA).
    """
    ssl_ctx: ssl.SSLContext | bool = tls.client if tls else True
    token_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=LoopbackResolver(), ssl=ssl_ctx)
    )
    mw = aociauth.new_std_transport(
        aociauth.StdTransportParams(config=config, session=token_session, **params)
    )
    session = aiohttp.ClientSession(
        middlewares=[mw],
        connector=aiohttp.TCPConnector(resolver=LoopbackResolver(), ssl=ssl_ctx),
        **(session_kw or {}),
    )
    try:
        yield mw, session
    finally:
        await session.close()
        await mw.close()
        await token_session.close()


def auths(mapping: dict[str, dict[str, str]]) -> aociauth.ConfigFile:
    """A ConfigFile holding ``auths`` entries (``{"host:port": {"username": ..., ...}}``)."""
    return aociauth.ConfigFile.from_dict({"auths": mapping})


# -- a credential helper whose behaviour the registry's host name picks --------------

HELPER_SCRIPT = f"""#!{sys.executable}
import json, os, sys, time
url = sys.stdin.read()
with open(os.environ["RUNS"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "url": url}}) + "\\n")
host = url.split(":")[0]
def answer(user, secret):
    sys.stdout.write(json.dumps({{"ServerURL": url, "Username": user, "Secret": secret}}))
if host == "gate.test":
    while not os.path.exists(os.environ["GATE"]):
        time.sleep(0.01)
    answer("alice", {PASSWORD!r})
elif host == "hang.test":
    time.sleep(600)
elif host == "secret.test":
    answer("alice", {HELPER_SECRET!r})
    sys.stderr.write("the keychain is locked\\n")
    sys.exit(3)
elif host == "garbage.test":
    answer_json = json.dumps({{"Username": "a", "Secret": {HELPER_SECRET!r}}})
    sys.stdout.write("WARNING: keychain slow\\n" + answer_json)
elif host == "token.test":
    answer("<token>", os.environ["IDT"])
elif host == "helper.test":
    answer("alice", {HELPER_SECRET!r})
elif host == "reg.test":
    answer("alice", {PASSWORD!r})
else:
    sys.stdout.write("credentials not found in native keychain\\n")
    sys.exit(1)
"""


@dataclass
class Helper:
    """``docker-credential-hardening`` installed in a directory only :attr:`env` has on PATH.

    What it answers depends on the host name of the server URL it is asked
    about (see :data:`HELPER_SCRIPT`); every run is logged to :attr:`runs_file`.
    """

    env: dict[str, str]
    runs_file: Path
    gate: Path

    def runs(self) -> list[dict[str, object]]:
        if not self.runs_file.exists():
            return []
        return [json.loads(line) for line in self.runs_file.read_text().splitlines()]

    def config(
        self, helpers: dict[str, str], timeout: float = 10.0, **doc: object
    ) -> aociauth.ConfigFile:
        runner = exec_helper_with_env(self.env, timeout=timeout)
        return aociauth.ConfigFile.from_dict({"credHelpers": helpers, **doc}, runner=runner)


def install_helper(directory: Path) -> Helper:
    bindir = directory / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-hardening"
    script.write_text(HELPER_SCRIPT)
    script.chmod(0o755)
    env = {
        "PATH": f"{bindir}{os.pathsep}{os.defpath}",
        "RUNS": str(directory / "runs.log"),
        "GATE": str(directory / "gate"),
        "IDT": "",
    }
    return Helper(env, directory / "runs.log", directory / "gate")
