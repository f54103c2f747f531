"""Issue 10, item 5: hostile input ends in our error, and forges no header.

Every field that becomes a URL, a header or a number goes through the real
middleware from a loopback peer, with values Hypothesis picks: a config entry's
fields, the challenge parameters a registry sends, a token server's answer, a
redirect's ``Location``, ``Retry-After`` from the registry and from the token
server. Whatever the value:

* only :class:`aociauth.OCIAuthError` or :class:`aiohttp.ClientError` reaches the
  caller (never ``ValueError``, ``IndexError``, ``TypeError``, ``UnicodeError``,
  ``KeyError``), within a bounded time;
* no request any server receives has a header line the value injected (CR/LF),
  and the host a redirect leads to never receives ``Authorization``;
* the canary password is in no log record (``aociauth`` at DEBUG), exception
  text or repr, and in no request in clear.

The servers are raw asyncio servers on 127.0.0.1 (raw, so they can send any
bytes an attacker would), started once per test on a loop in a thread; each
example sets what they answer next. Names other than ``evil.test`` (which is
127.0.0.1) do not resolve, so nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import aociauth
from aociauth import _resolver as resolver_module
from aociauth.testing.client import TableResolver
from aociauth.testing.leaks import PASSWORD, assert_clean, exception_texts

BOUND = 20.0
EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INJECTED = "x-injected"
GOOD = "good-token"


#: ``evil.test`` is 127.0.0.1; every other name fails to resolve (no DNS, ever).
NAMES = {"evil.test": "127.0.0.1"}


Answer = Callable[[bytes], bytes]


def response(
    status: int,
    headers: list[tuple[str, str]] = (),
    body: bytes = b"",  # type: ignore[assignment]
) -> bytes:
    """Raw HTTP/1.1 bytes, header values written as given (any character, UTF-8)."""
    lines = [f"HTTP/1.1 {status} X".encode()]
    for name, value in headers:
        lines.append(name.encode() + b": " + value.encode("utf-8", "replace"))
    lines += [b"Content-Length: %d" % len(body), b"Connection: close", b"", b""]
    return b"\r\n".join(lines) + body


@dataclass
class Raw:
    """A loopback HTTP server answering each request with what :attr:`answer` makes of it."""

    answer: Answer = lambda head: response(200)
    heads: list[bytes] = field(default_factory=list)
    port: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    await reader.readexactly(int(value))
            writer.write(self.answer(head))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    def names(self) -> list[list[str]]:
        """The header names of every request received, lower case."""
        out = []
        for head in self.heads:
            lines = head.decode("latin-1").split("\r\n")[1:]
            out.append([ln.partition(":")[0].strip().lower() for ln in lines if ln])
        return out


def authorization(head: bytes) -> str:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "authorization":
            return value.strip()
    return ""


class Stage:
    """A loop in a thread with the registry, token and redirect-target servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.registry, self.token, self.evil = Raw(), Raw(), Raw()
        for server in (self.registry, self.token, self.evil):
            self.run(server.start())
        self.logs: list[str] = []

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = BOUND) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise AssertionError(f"no outcome within {timeout} s: a hang") from None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.token.port}/token"

    @property
    def registry_host(self) -> str:
        return f"127.0.0.1:{self.registry.port}"

    def reset(self, registry: Answer, token: Answer) -> None:
        self.registry.answer, self.token.answer = registry, token
        for server in (self.registry, self.token, self.evil):
            server.heads.clear()
        self.logs.clear()

    def close(self) -> None:
        async def stop() -> None:
            for server in (self.registry, self.token, self.evil):
                assert server.server is not None
                server.server.close()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    # -- one example --------------------------------------------------------------------

    def attempt(self, config: Any = None, **params: Any) -> BaseException | None:
        """One GET of a manifest through a fresh middleware: the error it ended in, if any."""
        if config is None:
            config = aociauth.ConfigFile.from_dict(
                {"auths": {self.registry_host: {"username": "alice", "password": PASSWORD}}}
            )
        params.setdefault("retry_backoff", 0.01)
        params.setdefault("retry_max_wait", 0.05)

        async def go() -> BaseException | None:
            mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=config, **params))
            connector = aiohttp.TCPConnector(resolver=TableResolver(NAMES))
            try:
                async with aiohttp.ClientSession(connector=connector, middlewares=[mw]) as s:
                    url = f"http://{self.registry_host}/v2/team/app/manifests/v1"
                    async with s.get(url) as resp:
                        await resp.read()
            except (aociauth.OCIAuthError, aiohttp.ClientError) as exc:
                return exc
            finally:
                await mw.close()
            return None

        return self.run(go())

    def check(self, outcome: BaseException | None) -> None:
        """What must hold after every example, whatever it ended in."""
        if outcome is not None:
            assert_clean(exception_texts(outcome))
        for line in self.logs:
            assert_clean(line)
        for server in (self.registry, self.token, self.evil):
            for names in server.names():
                assert INJECTED not in names, f"a forged header reached {server.port}: {names}"
            for head in server.heads:
                assert PASSWORD.encode() not in head
        for head in self.evil.heads:
            assert not authorization(head), "a redirect target received Authorization"


class Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(self.format(record))


@pytest.fixture(scope="module")
def stage() -> Iterator[Stage]:
    with pytest.MonkeyPatch.context() as mp:
        # The middleware's own token sessions resolve through this too: no DNS.
        mp.setattr(resolver_module, "DefaultResolver", lambda: TableResolver(NAMES))
        s = Stage()
        logger = logging.getLogger("aociauth")
        handler = Collect(s.logs)
        old = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        try:
            yield s
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old)
            s.close()


# -- strategies ---------------------------------------------------------------------------

#: Pieces attackers use: line breaks (raw and percent-encoded), quotes, NULs,
#: non-ASCII digits and letters, IDNA traps, huge numbers, bidi controls.
NASTY = [
    "\r\nX-Injected: 1",
    "\nX-Injected: 1",
    "%0d%0aX-Injected:%201",
    '"',
    "\\",
    "\x00",
    "²",
    "١٢",
    "\u202e",
    "xn--",
    "é",
    "[",
    "]",
    "@",
    "%",
    "%zz",
    ":",
    "999999999999999999999999",
    "-1",
    "1e400",
    "NaN",
    " ",
    "\t",
    "\udcff",
]
piece = st.sampled_from(NASTY) | st.text(max_size=8)
nasty_text = st.lists(piece, max_size=4).map("".join)
#: Text with no digit, no '[' and no '.': as a host it can never be an IP literal.
no_ip = st.text(
    alphabet=st.characters(blacklist_characters="0123456789[].", blacklist_categories=("Nd",)),
    max_size=12,
)


def urls(stage: Stage) -> st.SearchStrategy[str]:
    """URL-ish strings whose authority, when they have one, is loopback or never resolves."""
    return st.one_of(
        nasty_text.map(lambda t: f"http://evil.test:{stage.evil.port}/{t}"),
        nasty_text.map(lambda t: f"http://127.0.0.1:{stage.token.port}/token?{t}"),
        nasty_text.map(lambda t: f"http://127.0.0.1:{stage.token.port}/{t}"),
        nasty_text.map(lambda t: "/" + t.lstrip("/\\")),
        no_ip.map(lambda t: f"http://{t}/x"),
        no_ip.map(lambda t: f"https://{t}:{stage.evil.port}/"),
        st.sampled_from(
            [
                "",
                "http://",
                "http://[",
                "http://[::1",
                "http://a b/",
                "http://%zz/",
                "http://evil.test:99999/",
                "http://evil.test:-1/",
                f"http://evil.test:{stage.evil.port}\r\nX-Injected: 1/",
                "ftp://evil.test/",
                "javascript:alert(1)",
                "http://é.test/",
                "http://xn--zz.test/",
                "http://\udcff.test/",
                ":",
                "\\\\evil.test\\x",
            ]
        ),
    )


numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    nasty_text,
    st.sampled_from(["²", "١٢٣", "0x10", "1_000", " 5 ", "Wed, 21 Oct 2015 07:28:00 GMT"]),
    st.sampled_from(["Wed, 99 Oct 2015 99:99:99 GMT", "Mon, 01 Jan 10000 00:00:00 GMT"]),
)


def ok_token(head: bytes) -> bytes:
    return response(200, [("Content-Type", "application/json")], b'{"token":"%s"}' % GOOD.encode())


def challenge(stage: Stage, **fields: str) -> str:
    params = {"realm": stage.realm, "service": "reg", "scope": "repository:team/app:pull"}
    params.update(fields)
    return "Bearer " + ",".join(f'{k}="{v}"' for k, v in params.items())


def registry_wanting_token(stage: Stage, then: Callable[[bytes], bytes] | None = None) -> Answer:
    def answer(head: bytes) -> bytes:
        if authorization(head) == f"Bearer {GOOD}":
            return then(head) if then else response(200, body=b"{}")
        return response(401, [("WWW-Authenticate", challenge(stage))])

    return answer


# -- the properties -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["realm", "service", "scope", "error", "whole"])
def test_challenge_parameters(stage: Stage, name: str) -> None:
    @EXAMPLES
    @given(
        value=nasty_text | urls(stage),
    )
    def prop(value: str) -> None:
        line = value if name == "whole" else challenge(stage, **{name: value})

        def registry(head: bytes) -> bytes:
            if authorization(head) == f"Bearer {GOOD}":
                return response(200, body=b"{}")
            return response(401, [("WWW-Authenticate", line)])

        stage.reset(registry, ok_token)
        stage.check(stage.attempt())

    prop()


@pytest.mark.parametrize(
    "name", ["token", "access_token", "expires_in", "refresh_token", "issued_at"]
)
def test_token_response_fields(stage: Stage, name: str) -> None:
    json_leaf = st.one_of(
        nasty_text,
        st.integers(min_value=-(10**40), max_value=10**40),
        st.floats(),
        st.none(),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
    )

    @EXAMPLES
    @given(
        value=json_leaf,
        raw=st.booleans(),
    )
    def prop(value: object, raw: bool) -> None:
        doc: dict[str, object] = {"token": GOOD, "expires_in": 300, name: value}
        text = json.dumps(doc, allow_nan=True)
        if raw and isinstance(value, str):
            # Written as is (unescaped), as a careless server would.
            text = text.replace(json.dumps(value), f'"{value}"')
        body = text.encode("utf-8", "replace")

        def token(head: bytes) -> bytes:
            return response(200, [("Content-Type", "application/json")], body)

        stage.reset(registry_wanting_token(stage), token)
        config = (
            aociauth.ConfigFile.from_dict(
                {"auths": {stage.registry_host: {"identitytoken": "idt-canary"}}}
            )
            if name == "refresh_token"
            else None
        )
        stage.check(stage.attempt(config))

    prop()


def test_redirect_location(stage: Stage) -> None:
    @EXAMPLES
    @given(location=urls(stage), status=st.sampled_from([301, 302, 303, 307, 308]))
    # User info aiohttp cannot encode as Basic credentials (it raised UnicodeEncodeError).
    @example(location="http://\u0100@;/x", status=301)
    @example(location="http://robot:secret@elsewhere.test/x", status=302)
    def prop(location: str, status: int) -> None:
        then = lambda head: response(status, [("Location", location)])  # noqa: E731
        stage.reset(registry_wanting_token(stage, then), ok_token)
        stage.check(stage.attempt())

    prop()


@pytest.mark.parametrize("where", ["registry", "token"])
def test_retry_after(stage: Stage, where: str) -> None:
    @EXAMPLES
    @given(
        value=numbers,
        status=st.sampled_from([429, 503]),
    )
    def prop(value: str, status: int) -> None:
        busy = response(status, [("Retry-After", value)])
        if where == "registry":
            stage.reset(registry_wanting_token(stage, lambda head: busy), ok_token)
        else:
            stage.reset(registry_wanting_token(stage), lambda head: busy)
        stage.check(stage.attempt())

    prop()


@pytest.mark.parametrize("name", ["username", "password", "auth", "identitytoken", "registrytoken"])
def test_config_entry_fields(stage: Stage, name: str) -> None:
    @EXAMPLES
    @given(
        value=nasty_text,
        how=st.sampled_from(["file", "custom"]),
    )
    def prop(value: str, how: str) -> None:
        entry = {"username": "alice", "password": PASSWORD, name: value}
        if name == "auth":
            entry = {"auth": value}
        stage.reset(registry_wanting_token(stage), ok_token)
        config: Any
        if how == "file":
            try:
                config = aociauth.ConfigFile.from_dict({"auths": {stage.registry_host: entry}})
            except aociauth.OCIAuthError as exc:
                assert_clean(exception_texts(exc))
                return
        else:
            fields = {
                "identitytoken": "refresh_token",
                "registrytoken": "access_token",
            }
            kw = {fields.get(k, k): v for k, v in entry.items() if k != "auth"}

            class Custom:
                async def entry_for_registry(self, host: str) -> aociauth.ConfigEntry:
                    return aociauth.ConfigEntry(**kw)

            config = Custom()
        stage.check(stage.attempt(config))

    prop()


# -- regressions found by the properties above ----------------------------------------------


class Fixed:
    """A custom Config answering one fixed value."""

    def __init__(self, value: object) -> None:
        self.value = value

    async def entry_for_registry(self, host: str) -> Any:
        return self.value


@pytest.mark.parametrize(
    "answer",
    [
        aociauth.ConfigEntry(access_token="tok\r\nX-Injected: 1"),
        aociauth.ConfigEntry(username="alice", password="pw\nX-Injected: 1"),
        aociauth.ConfigEntry(refresh_token="idt\x00"),
        aociauth.ConfigEntry(username="\udcff", password=PASSWORD),
        {"username": "alice", "password": PASSWORD},
        None,
    ],
    ids=["registrytoken-crlf", "password-lf", "identitytoken-nul", "surrogate", "a-dict", "none"],
)
def test_a_custom_configs_unsendable_entry_is_our_error(stage: Stage, answer: object) -> None:
    """aiohttp raised ValueError ("Forbidden control character") for a custom Config's
    access token holding CR/LF, and the core UnicodeEncodeError for a lone surrogate in
    its username; a ConfigFile refused both already, a custom one now too."""
    stage.reset(registry_wanting_token(stage), ok_token)
    outcome = stage.attempt(Fixed(answer))
    assert isinstance(outcome, aociauth.CredentialLookupError), repr(outcome)
    assert outcome.step == "config"
    stage.check(outcome)
    # Refused before anything carrying it was sent.
    assert all(not authorization(h) for h in stage.registry.heads + stage.token.heads)
