"""No secret reaches a log, an exception or a repr.

One test runs the flows that handle secrets (Basic, bearer with Basic
credentials, a refresh token, a config access token, a failing token server,
failing and succeeding helpers, a redirect to a pre-signed URL, a registry
error the caller raises for) with canary secrets and every logger at DEBUG,
then looks for the canaries in the captured log, in the str, repr and
traceback of every exception, and in the repr of every object the caller can
reach. (security.md D1-D4, T-L1, T-L2; CVE-2021-45449.)

Only servers that keep no access log are used (Registry, TokenServer,
RecordingServer), so the log holds what the client side wrote.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

import aociauth
from aociauth import ConfigFile, parse_scope
from aociauth._redact import redact_query
from aociauth.testing import RecordingServer, Registry, TokenServer
from aociauth.testing.client import loopback_client
from aociauth.testing.credhelper import HelperAnswer, install_credential_helper
from aociauth.testing.leaks import (
    ACCESS_TOKEN,
    CANARIES,
    HELPER_SECRET,
    PASSWORD,
    REFRESH_TOKEN,
    SIGNATURE,
    assert_clean,
    exception_texts,
)
from aociauth.testing.scripted import ScriptedServer
from aociauth.tokens import parse_token_response

MANIFEST_TYPES = "application/vnd.oci.image.manifest.v1+json"

#: Seconds any single scenario may take before the test calls it a hang.
BOUND = 20.0


class Findings:
    """Everything a secret could leak into, gathered as text."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self.errors = 0

    def error(self, where: str, exc: BaseException) -> None:
        self.errors += 1
        self.texts.append((f"exception in {where}", exception_texts(exc)))

    def reprs(self, where: str, *objects: Any) -> None:
        for obj in objects:
            self.texts.append((f"repr in {where}", repr(obj)))

    def middleware(self, where: str, mw: aociauth.AuthMiddleware) -> None:
        """The middleware, its stats, and one level of what it holds (as a debugger shows it)."""
        self.reprs(where, mw, mw.stats, mw.stats.as_dict())
        for name, value in vars(mw).items():
            self.texts.append((f"repr of {where} mw.{name}", repr(value)))

    def check(self, *extra: str) -> None:
        for where, text in self.texts:
            for secret in (*CANARIES, *extra):
                assert secret not in text, f"a secret ({secret[:12]}...) leaked: {where}"


async def pull(
    session: aiohttp.ClientSession, url: str, found: Findings, where: str, **kw: Any
) -> int | None:
    try:
        async with await asyncio.wait_for(session.get(url, **kw), BOUND) as r:
            await r.read()
            # The response's own URL is the one the caller fetched (a pre-signed one,
            # after a redirect): what must not be on it is a credential in its headers.
            hops = [h.request_info.headers for h in (*r.history, r)]
            found.reprs(where, *hops)
            return r.status
    except aiohttp.ClientError as exc:
        found.error(where, exc)
        logging.getLogger("caller").exception("pull of %s failed", url)
        return None


async def test_canaries_never_reach_logs_errors_or_reprs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="aociauth")
    found = Findings()
    helper = install_credential_helper(
        tmp_path,
        {
            "helper.test": HelperAnswer("alice", HELPER_SECRET),
            "secret.test": HelperAnswer(
                "alice", HELPER_SECRET, stderr="the keychain is locked\n", exit_code=3
            ),
        },
    )
    outcomes: dict[str, int | None] = {}
    async with (
        TokenServer(users={"alice": PASSWORD}) as ts,
        Registry(auth="bearer", token_server=ts) as bearer,
        Registry(auth="basic", users={"alice": PASSWORD}) as basic,
        Registry(auth="basic", users={"alice": HELPER_SECRET}) as by_helper,
        RecordingServer() as redirector,
        RecordingServer(default_status=500) as cdn,
    ):
        ts.refresh_tokens[REFRESH_TOKEN] = "alice"
        image = bearer.seed_image("team/app")
        basic.seed_image("team/app")
        by_helper.seed_image("team/app")
        manifest = "/v2/team/app/manifests/latest"
        accept = {"Accept": MANIFEST_TYPES}
        login = {"username": "alice", "password": PASSWORD}

        # 1. Basic.  2. Bearer with Basic credentials, then a 500 the caller raises for.
        async with loopback_client(
            aociauth.ConfigFile.from_dict({"auths": {basic.host: login, bearer.host: login}})
        ) as (mw, session):
            outcomes["basic"] = await pull(
                session, basic.url + manifest, found, "basic", headers=accept
            )
            outcomes["bearer"] = await pull(
                session, bearer.url + manifest, found, "bearer", headers=accept
            )
            bearer.fail_next(1, 500)
            async with session.get(bearer.url + manifest, headers=accept) as r:
                with pytest.raises(aiohttp.ClientResponseError) as ei:
                    r.raise_for_status()
            found.error("raise_for_status after auth", ei.value)
            logging.getLogger("caller").error("registry said %r", ei.value)
            tok = mw.cached_token(bearer.url, parse_scope("repository:team/app:pull"))
            assert tok is not None
            found.reprs("bearer", tok)
            found.middleware("basic+bearer", mw)
            issued = tok.value

        # 3. A refresh token from the config.
        config = aociauth.ConfigFile.from_dict(
            {"auths": {bearer.host: {"identitytoken": REFRESH_TOKEN}}}
        )
        async with loopback_client(config) as (mw, session):
            blob = f"{bearer.url}/v2/team/app/blobs/{image.config_digest}"
            outcomes["refresh"] = await pull(session, blob, found, "refresh")
            found.middleware("refresh", mw)

        # 4. An access token from the config, which the registry does not take.
        config = aociauth.ConfigFile.from_dict(
            {"auths": {bearer.host: {"registrytoken": ACCESS_TOKEN}}}
        )
        async with loopback_client(config) as (mw, session):
            outcomes["access"] = await pull(session, blob, found, "access token")
            found.middleware("access token", mw)

        # 5. A token server failing in every way, with a password and a refresh token.
        for name, fail in [
            ("500", lambda: ts.fail_next(3, 500, body=f"password={PASSWORD}")),
            ("garbage", lambda: ts.respond_with("not_json")),
            ("injection", lambda: ts.respond_with("bad_token_chars")),
            ("refresh refused", lambda: ts.refresh_tokens.pop(REFRESH_TOKEN, None)),
        ]:
            fail()
            entry = {"identitytoken": REFRESH_TOKEN} if name == "refresh refused" else login
            async with loopback_client(
                aociauth.ConfigFile.from_dict({"auths": {bearer.host: entry}}), retry_backoff=0.01
            ) as (mw, session):
                outcomes[f"token server {name}"] = await pull(session, blob, found, name)
                found.middleware(name, mw)
            ts.clear_failures()

        # 6. Helpers: one answering with the secret, one failing with it on stdout.
        by_helper_host = f"helper.test:{by_helper.port}"
        config = helper.config({by_helper_host: helper.name, "secret.test:1": helper.name})
        async with loopback_client(config) as (mw, session):
            url = f"http://{by_helper_host}{manifest}"
            outcomes["helper"] = await pull(session, url, found, "helper", headers=accept)
            outcomes["helper failing"] = await pull(
                session, f"http://secret.test:1{manifest}", found, "helper failing"
            )
            found.reprs("helper", await config.resolve(by_helper_host))
            found.middleware("helpers", mw)

        # 7. A blob redirected to a pre-signed URL whose server fails.
        presigned = f"http://cdn.test:{cdn.port}/b?X-Amz-Signature={SIGNATURE}"
        redirector.set_response(
            "/v2/team/app/blobs/sha256:0", status=307, headers={"Location": presigned}
        )
        async with loopback_client(
            aociauth.ConfigFile.from_dict({"auths": {redirector.host: login}})
        ) as (mw, session):
            url = f"{redirector.url}/v2/team/app/blobs/sha256:0"
            outcomes["presigned"] = await pull(session, url, found, "presigned")
            found.middleware("presigned", mw)

    found.reprs(
        "values",
        ConfigFile.from_dict({"auths": {"r": {"identitytoken": REFRESH_TOKEN}}}),
        aociauth.ConfigEntry(REFRESH_TOKEN, ACCESS_TOKEN, "alice", PASSWORD),
        parse_token_response(
            b'{"token": "%s", "refresh_token": "%s"}'
            % (ACCESS_TOKEN.encode(), REFRESH_TOKEN.encode()),
            registry="r",
        ),
        aociauth.StdTransportParams(config=aociauth.ConfigFile.from_dict({"auths": {"r": login}})),
    )
    # Every flow ran as intended: the failures failed, the rest worked.
    assert outcomes == {
        "basic": 200,
        "bearer": 200,
        "refresh": 200,
        "access": 200,
        "token server 500": None,
        "token server garbage": None,
        "token server injection": None,
        "token server refresh refused": None,
        "helper": 200,
        "helper failing": None,
        "presigned": 500,
    }
    assert found.errors == 6
    assert "aociauth" in {r.name for r in caplog.records}
    found.texts.append(("the log", caplog.text))
    found.check(issued, "eyJ")


def aociauth_locals(exc: BaseException) -> list[tuple[str, str]]:
    """(where, repr) of every local variable, in every frame of ``exc``'s traceback (and its
    causes), that is an object of a class aociauth defines: what pytest prints for a failing
    test and what error trackers (Sentry, by default) record with an exception."""
    found = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        tb = cur.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            for name, value in frame.f_locals.items():
                if type(value).__module__.startswith("aociauth"):
                    found.append((f"{frame.f_code.co_name}: {name}", repr(value)))
            tb = tb.tb_next
        cur = cur.__cause__ or cur.__context__
    return found


async def test_objects_in_the_frames_of_an_error_show_no_secret() -> None:
    """A refresh-token grant the token server answers with a 500: the middleware's own
    objects in the frames of the error (credentials, challenge, state) hide the refresh token."""
    async with (
        TokenServer(users={}) as ts,
        Registry(auth="bearer", token_server=ts) as reg,
    ):
        ts.refresh_tokens[REFRESH_TOKEN] = "alice"
        digest = reg.seed_blob("team/app", b"blob")
        ts.fail_next(3, 500)
        config = aociauth.ConfigFile.from_dict(
            {"auths": {reg.host: {"identitytoken": REFRESH_TOKEN}}}
        )
        async with loopback_client(config, retry_backoff=0.01) as (_, session):
            with pytest.raises(aociauth.TokenServerError) as ei:
                await asyncio.wait_for(session.get(f"{reg.url}/v2/team/app/blobs/{digest}"), BOUND)
    frames = aociauth_locals(ei.value)
    # The driver's last effect is the failed fetch: it holds the identity (with its secrets).
    assert any(where.endswith(": effect") and "Identity(" in text for where, text in frames)
    for where, text in frames:
        assert all(secret not in text for secret in CANARIES), f"a secret in {where}"


# -- pre-signed URLs in errors ---------------------------------------------------------


async def test_a_presigned_url_does_not_reach_the_callers_error() -> None:
    async with RecordingServer() as registry, RecordingServer(default_status=500) as cdn:
        presigned = f"http://cdn.test:{cdn.port}/b?X-Amz-Signature={SIGNATURE}&digest=d"
        registry.set_response("/v2/a/blobs/d", status=307, headers={"Location": presigned})
        async with (
            loopback_client(None) as (_, session),
            session.get(f"{registry.url}/v2/a/blobs/d") as r,
        ):
            with pytest.raises(aiohttp.ClientResponseError) as ei:
                r.raise_for_status()
    assert ei.value.status == 500
    assert "X-Amz-Signature" in str(ei.value)  # the shape is still there to debug with
    assert_clean(str(ei.value) + repr(ei.value))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"https://s3.test/b/x?X-Amz-Signature={SIGNATURE}&X-Amz-Date=1",
            "https://s3.test/b/x?X-Amz-Signature=REDACTED&X-Amz-Date=REDACTED",
        ),
        (
            f"https://storage.test/o?access_token={ACCESS_TOKEN}&alt=media",
            "https://storage.test/o?access_token=REDACTED&alt=REDACTED",
        ),
        (
            "https://r.test/token?scope=repository:a:pull&scope=registry:catalog:*&service=s",
            "https://r.test/token?scope=repository:a:pull&scope=registry:catalog:*&service=s",
        ),
        (
            "https://r.test/v2/a/blobs/uploads/?mount=sha256:1&from=b&digest=sha256:1",
            "https://r.test/v2/a/blobs/uploads/?mount=sha256:1&from=b&digest=sha256:1",
        ),
        ("https://r.test/v2/_catalog?n=10&last=a", "https://r.test/v2/_catalog?n=10&last=a"),
        (f"https://alice:{PASSWORD}@r.test/v2/#{ACCESS_TOKEN}", "https://r.test/v2/"),
        ("https://r.test/v2/", "https://r.test/v2/"),
        ("http://[::1", "<unparseable URL>"),
    ],
)
def test_redact_query_hides_every_value_but_the_safe_ones(url: str, shown: str) -> None:
    assert redact_query(url) == shown
    assert redact_query(URL(url) if "[::1" not in url else url) == shown


# -- aiohttp errors raised while the request carries our credential ---------------------------


@contextlib.asynccontextmanager
async def raw_registry(bad_answer: bytes, realm: str = "", service: str = "") -> AsyncIterator[int]:
    """A registry on a raw socket: a 401 (Basic, or Bearer with ``realm``) to a request
    without Authorization, ``bad_answer`` (not valid HTTP) to one with it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if b"\r\nauthorization:" in head.lower():
                    writer.write(bad_answer)
                    await writer.drain()
                    break
                challenge = (
                    f'Bearer realm="{realm}",service="{service}",scope="repository:a:pull"'
                    if realm
                    else 'Basic realm="r"'
                )
                writer.write(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
                    + f"WWW-Authenticate: {challenge}\r\n\r\n".encode()
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


BAD_ANSWERS = {
    "status line": b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
    "header too long": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    "invalid header": b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
}


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
@pytest.mark.parametrize("bad", sorted(BAD_ANSWERS))
async def test_aiohttp_errors_raised_mid_request_carry_no_credential(scheme: str, bad: str) -> None:
    """The registry answers the authorised request with something aiohttp cannot parse.
    aiohttp raises a ClientResponseError whose request_info is the request's live
    headers: our Authorization must be gone from them by the time the caller sees it."""
    async with contextlib.AsyncExitStack() as stack:
        realm = service = ""
        if scheme == "bearer":
            ts = await stack.enter_async_context(TokenServer(users={"alice": PASSWORD}))
            realm, service = ts.realm, ts.service
        port = await stack.enter_async_context(raw_registry(BAD_ANSWERS[bad], realm, service))
        config = aociauth.ConfigFile.from_dict(
            {"auths": {f"127.0.0.1:{port}": {"username": "alice", "password": PASSWORD}}}
        )
        mw, session = await stack.enter_async_context(loopback_client(config))
        with pytest.raises(aiohttp.ClientResponseError) as ei:
            await asyncio.wait_for(session.get(f"http://127.0.0.1:{port}/v2/a/manifests/x"), BOUND)
        tok = mw.cached_token(f"http://127.0.0.1:{port}", parse_scope("repository:a:pull"))
    assert (tok is not None) == (scheme == "bearer")
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    text = exception_texts(ei.value)
    assert basic not in text
    assert tok is None or tok.value not in text
    assert "Authorization" not in ei.value.request_info.headers


@pytest.mark.parametrize("bad", sorted(BAD_ANSWERS))
async def test_a_token_server_answer_aiohttp_cannot_parse_leaves_no_credential_behind(
    bad: str,
) -> None:
    """The token request carries alice's Basic credentials; the token server's answer is
    not HTTP. The caller's error (and everything it chains to) holds none of it."""
    async with raw_registry(BAD_ANSWERS[bad]) as token_port:
        realm = f"http://127.0.0.1:{token_port}/token"

        async def registry(req: web.Request) -> web.StreamResponse:
            challenge = f'Bearer realm="{realm}",service="s",scope="repository:a:pull"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})

        async with ScriptedServer(registry) as reg:
            config = aociauth.ConfigFile.from_dict(
                {"auths": {f"127.0.0.1:{reg.port}": {"username": "alice", "password": PASSWORD}}}
            )
            async with loopback_client(config, retry_backoff=0.01) as (_, session):
                with pytest.raises(aociauth.TokenServerError) as ei:
                    await asyncio.wait_for(session.get(reg.url_for("/v2/a/manifests/x")), BOUND)
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert basic not in exception_texts(ei.value)
    assert isinstance(ei.value, aiohttp.ClientError)
