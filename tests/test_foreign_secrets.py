"""Issue 10, item 7: no secret in any message, whatever its source.

A custom :class:`aociauth.Config` may raise anything, with any text; a credential
helper may print anything on stderr. Either may quote a URL with userinfo and a
signed query. Through the real middleware and httpx auth, against a loopback
registry, with the ``aociauth`` logger at DEBUG: the :class:`CredentialLookupError`
that reaches the caller, its str, repr, everything it chains to and its formatted
traceback, and every log record are free of both secrets.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import pytest

import aociauth
from aociauth import ConfigEntry
from aociauth.helpers import exec_helper_with_env
from aociauth.httpx import RegistryAuth
from aociauth.testing.registry import Registry

CANARY = "CANARYuserinfo7c1e"
CANARY2 = "CANARYquery9b4d"
LEAKY_URL = f"https://robot:{CANARY}@vault.example/v1/x?token={CANARY2}"


class LeakyError(Exception):
    """What a vault client might raise: its message quotes the URL it called."""


class LeakyConfig:
    """A custom Config whose lookup fails with a message holding a signed URL."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0

    async def entry_for_registry(self, host: str) -> ConfigEntry:
        self.calls += 1
        raise self.exc


def everything(exc: BaseException) -> str:
    """str and repr of ``exc`` and its whole chain, and the formatted traceback."""
    parts = ["".join(traceback.format_exception(type(exc), exc, exc.__traceback__))]
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        parts += [str(cur), repr(cur), repr(cur.args)]
        cur = cur.__cause__ or cur.__context__
    return "\n".join(parts)


def assert_no_canary(text: str) -> None:
    assert CANARY not in text
    assert CANARY2 not in text


def assert_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert_no_canary(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            assert_no_canary(everything(record.exc_info[1]))


@pytest.fixture
async def reg() -> AsyncIterator[Registry]:
    async with Registry(auth="basic", users={"alice": "pw"}) as registry:
        yield registry


@pytest.fixture(autouse=True)
def debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aociauth")


FOREIGN = [
    LeakyError(f"lookup failed: GET {LEAKY_URL} answered 403"),
    ValueError(f"bad answer from {LEAKY_URL}"),
    OSError(5, f"cannot reach {LEAKY_URL}"),
    KeyError(LEAKY_URL),
    LeakyError(f"first {LEAKY_URL}", f"second {LEAKY_URL}"),
]


def _chained() -> BaseException:
    try:
        raise LeakyError(f"inner {LEAKY_URL}")
    except LeakyError as inner:
        outer = RuntimeError(f"outer {LEAKY_URL}")
        outer.__cause__ = inner
        return outer


@pytest.mark.parametrize("exc", [*FOREIGN, _chained()], ids=lambda e: type(e).__name__)
async def test_a_custom_configs_exception_reaches_no_message(
    reg: Registry, exc: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    config = LeakyConfig(exc)
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=config))
    async with mw, aiohttp.ClientSession(middlewares=[mw]) as session:
        with pytest.raises(aociauth.CredentialLookupError) as info:
            async with session.get(f"{reg.url}/v2/team/app/manifests/v1") as resp:
                await resp.read()
    assert config.calls == 1
    err = info.value
    assert err.registry == reg.host
    assert err.__cause__ is not None  # the caller still learns what failed, scrubbed
    assert_no_canary(everything(err))
    assert "vault.example" in str(err)  # the message keeps what is not secret
    assert_logs_clean(caplog)


async def test_httpx_a_custom_configs_exception_reaches_no_message(
    reg: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    auth = RegistryAuth(aociauth.StdTransportParams(config=LeakyConfig(FOREIGN[0])))
    async with auth, httpx.AsyncClient(auth=auth) as client:
        with pytest.raises(aociauth.CredentialLookupError) as info:
            await client.get(f"{reg.url}/v2/team/app/manifests/v1")
    assert_no_canary(everything(info.value))
    assert_logs_clean(caplog)


HELPER = f"""#!{sys.executable}
import sys
sys.stdin.read()
sys.stderr.write("vault said no: GET {LEAKY_URL}\\n")
sys.stdout.write("error from {LEAKY_URL}\\n")
sys.exit(1 if sys.argv[1:] == ["get"] else 2)
"""


async def test_a_helper_printing_a_signed_url_reaches_no_message(
    tmp_path: Path, reg: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-leaky"
    script.write_text(HELPER)
    script.chmod(0o755)
    runner = exec_helper_with_env({"PATH": f"{bindir}{os.pathsep}{os.defpath}"}, timeout=10)
    config = aociauth.ConfigFile.from_dict({"credHelpers": {reg.host: "leaky"}}, runner=runner)
    mw = aociauth.new_std_transport(aociauth.StdTransportParams(config=config))
    async with mw, aiohttp.ClientSession(middlewares=[mw]) as session:
        with pytest.raises(aociauth.CredentialLookupError) as info:
            async with session.get(f"{reg.url}/v2/team/app/manifests/v1") as resp:
                await resp.read()
    assert isinstance(info.value.__cause__, aociauth.HelperError)
    assert_no_canary(everything(info.value))
    assert_logs_clean(caplog)
