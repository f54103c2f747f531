"""OpenTelemetry spans: how many each flow makes, what they say, and what they never say.

The spans go to the SDK's in-memory exporter. Flows run against the
in-process registry and token server through both adapters (they share the
driver that makes the spans), helpers are real processes, and the no-op path
is proved in a subprocess where a shadowing package makes ``opentelemetry``
unimportable, as if the ``otel`` extra were not installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
import sniffio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from aociauth import (
    ConfigFile,
    HelperError,
    StdTransportParams,
    TokenServerError,
    load_with_env,
)
from aociauth._trace import NAMES_ENV
from aociauth.testing import Registry, TokenServer
from aociauth.testing.adapters import ADAPTERS, Harness
from aociauth.testing.registry import OCI_MANIFEST

PASSWORD = "alice-otel-password"
USERS = {"alice": PASSWORD}
HELPER_PASSWORD = "helper-otel-secret"

LOOKUP = "aociauth.credential_lookup"
HELPER = "aociauth.helper_run"
FETCH = "aociauth.token_fetch"
REQUEST = "aociauth.token_request"

#: The Accept header of a manifest pull.
MANIFEST = {"Accept": OCI_MANIFEST}


def config_for(reg: Registry, **entry: str) -> ConfigFile:
    """A config with ``entry`` for ``reg`` (an empty config without one)."""
    return ConfigFile.from_dict({"auths": {reg.host: entry}} if entry else {})


# -- recording -----------------------------------------------------------------------


class _ToTheTest(SpanProcessor):
    """Hands each ended span to the exporter of the test running, if there is one."""

    def __init__(self) -> None:
        self.exporter: InMemorySpanExporter | None = None

    def on_end(self, span: ReadableSpan) -> None:
        if self.exporter is not None:
            self.exporter.export((span,))


@pytest.fixture(scope="session")
def _router() -> _ToTheTest:
    # A tracer provider is set once per process: other modules run with it too.
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider
    router = _ToTheTest()
    provider.add_span_processor(router)
    return router


@pytest.fixture
def spans(_router: _ToTheTest) -> Iterator[InMemorySpanExporter]:
    _router.exporter = exporter = InMemorySpanExporter()
    yield exporter
    _router.exporter = None


@pytest.fixture(params=ADAPTERS)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    e = Harness(str(request.param))
    yield e
    await e.stop()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def names(exporter: InMemorySpanExporter) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in exporter.get_finished_spans():
        out[s.name] = out.get(s.name, 0) + 1
    return out


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def everything_said(spans: Sequence[ReadableSpan]) -> str:
    """Every name, attribute, event and status text of ``spans``, as one string."""
    said: list[str] = []
    for s in spans:
        said += [s.name, str(s.status.description)]
        said += [f"{k}={v}" for k, v in (s.attributes or {}).items()]
        for e in s.events:
            said += [e.name, *(f"{k}={v}" for k, v in (e.attributes or {}).items())]
        said += [str(link.attributes) for link in s.links]
    return "\n".join(said)


async def bearer(env: Harness, **token_server: Any) -> tuple[TokenServer, Registry]:
    options: dict[str, Any] = {"users": USERS, "remember_tokens": True, **token_server}
    ts = await env.serve(TokenServer(**options))
    reg = await env.serve(Registry(auth="bearer", token_server=ts))
    reg.seed_image("team/app", "v1")
    return ts, reg


def alice(reg: Registry, **params: Any) -> StdTransportParams:
    config = config_for(reg, username="alice", password=PASSWORD)
    return StdTransportParams(config=config, **params)


def manifest(reg: Registry, repository: str = "team/app") -> str:
    return f"{reg.url}/v2/{repository}/manifests/v1"


# -- how many ------------------------------------------------------------------------


async def test_a_cold_pull_makes_one_lookup_and_one_fetch_and_cached_requests_none(
    env: Harness, spans: InMemorySpanExporter
) -> None:
    ts, reg = await bearer(env)
    async with env.client(alice(reg)) as c:
        assert (await c.get(manifest(reg), MANIFEST)).status == 200
        assert names(spans) == {LOOKUP: 1, FETCH: 1, REQUEST: 1}
        hits = c.stats.cache_hits
        for _ in range(100):
            assert (await c.get(manifest(reg), MANIFEST)).status == 200
        # The hundred were answered from the token cache, and made no span.
        assert c.stats.cache_hits - hits == 100
        assert ts.counters.requests == 1
        assert names(spans) == {LOOKUP: 1, FETCH: 1, REQUEST: 1}
        # The spans and the counters tell the same story.
        assert c.stats.config_lookups == len(named(spans, LOOKUP))
        assert c.stats.token_fetches == len(named(spans, FETCH))
        assert c.stats.total_token_requests == len(named(spans, REQUEST))
    (fetch,) = named(spans, FETCH)
    (request,) = named(spans, REQUEST)
    assert request.parent is not None
    assert fetch.context is not None
    assert request.parent.span_id == fetch.context.span_id


async def test_each_new_repository_is_one_more_fetch_and_no_more_lookups(
    env: Harness, spans: InMemorySpanExporter
) -> None:
    ts, reg = await bearer(env)
    for i in range(3):
        reg.seed_image(f"team/app{i}", "v1")
    async with env.client(alice(reg)) as c:
        for i in range(3):
            assert (await c.get(manifest(reg, f"team/app{i}"), MANIFEST)).status == 200
    assert ts.counters.requests == 3
    assert names(spans) == {LOOKUP: 1, FETCH: 3, REQUEST: 3}


async def test_retries_are_token_requests_of_one_fetch(
    env: Harness, spans: InMemorySpanExporter
) -> None:
    ts, reg = await bearer(env)
    ts.fail_next(2, 503)
    async with env.client(alice(reg, retry_backoff=0.01)) as c:
        assert (await c.get(manifest(reg), MANIFEST)).status == 200
        assert c.stats.token_server_retries == 2
    assert ts.counters.requests == 3
    (fetch,) = named(spans, FETCH)
    assert attrs(fetch)["aociauth.token_requests"] == 3
    assert attrs(fetch)["aociauth.token_retries"] == 2
    assert attrs(fetch)["aociauth.outcome"] == "ok"
    tries = sorted(named(spans, REQUEST), key=lambda s: attrs(s)["aociauth.attempt"])
    assert [attrs(s)["aociauth.attempt"] for s in tries] == [1, 2, 3]
    assert [attrs(s).get("http.response.status_code") for s in tries] == [503, 503, 200]
    assert [attrs(s)["aociauth.outcome"] for s in tries] == ["error", "error", "ok"]
    assert [attrs(s).get("error.type") for s in tries] == ["503", "503", None]


def test_httpx_on_trio_makes_the_same_spans(spans: InMemorySpanExporter) -> None:
    async def main() -> str:
        # The servers (aiohttp) run on an asyncio loop in a thread of their own.
        with anyio.from_thread.start_blocking_portal("asyncio") as portal:
            env = Harness("httpx", portal)
            try:
                ts, reg = await bearer(env)
                async with env.client(alice(reg)) as c:
                    for _ in range(20):
                        assert (await c.get(manifest(reg), MANIFEST)).status == 200
                    assert c.stats.cache_hits == 19  # all but the first
            finally:
                await env.stop()
        assert ts.counters.requests == 1
        return sniffio.current_async_library()

    assert anyio.run(main, backend="trio") == "trio"
    assert names(spans) == {LOOKUP: 1, FETCH: 1, REQUEST: 1}
    (fetch,) = named(spans, FETCH)
    (request,) = named(spans, REQUEST)
    assert request.parent is not None
    assert fetch.context is not None
    assert request.parent.span_id == fetch.context.span_id


# -- what they say -------------------------------------------------------------------


async def test_the_fetch_names_registry_realm_scope_grant_and_outcome(
    env: Harness, spans: InMemorySpanExporter
) -> None:
    ts, reg = await bearer(env)
    async with env.client(alice(reg)) as c:
        assert (await c.get(manifest(reg), MANIFEST)).status == 200
    (fetch,) = named(spans, FETCH)
    assert attrs(fetch) == {
        "aociauth.registry": reg.host,
        "server.address": "127.0.0.1",
        "server.port": ts.port,
        "aociauth.scope.items": 1,
        "aociauth.scope.required_items": 1,
        "aociauth.scope.granted_items": 1,
        "aociauth.grant": "get_basic",
        "aociauth.credentials.sent": True,
        "aociauth.token_requests": 1,
        "aociauth.token_retries": 0,
        "aociauth.outcome": "ok",
    }
    assert fetch.status.status_code is StatusCode.UNSET
    (request,) = named(spans, REQUEST)
    assert attrs(request) == {
        "server.address": "127.0.0.1",
        "server.port": ts.port,
        "http.request.method": "GET",
        "aociauth.grant": "get_basic",
        "aociauth.attempt": 1,
        "aociauth.credentials.sent": True,
        "http.response.status_code": 200,
        "aociauth.outcome": "ok",
    }
    (lookup,) = named(spans, LOOKUP)
    assert attrs(lookup) == {
        "aociauth.registry": reg.host,
        "aociauth.downgraded": False,
        "aociauth.credentials.source": "file",
        "aociauth.helper.runs": 0,
        "aociauth.credentials.kind": "basic",
        "aociauth.outcome": "ok",
    }


async def test_an_anonymous_pull_says_no_credentials_went(
    env: Harness, spans: InMemorySpanExporter
) -> None:
    ts, reg = await bearer(env)
    async with env.client(StdTransportParams(config=config_for(reg))) as c:
        assert (await c.get(manifest(reg), MANIFEST)).status == 200
    assert ts.counters.get_anonymous == 1
    (lookup,) = named(spans, LOOKUP)
    assert attrs(lookup)["aociauth.credentials.source"] == "none"
    assert attrs(lookup)["aociauth.credentials.kind"] == "none"
    (fetch,) = named(spans, FETCH)
    assert attrs(fetch)["aociauth.grant"] == "get_anonymous"
    assert attrs(fetch)["aociauth.credentials.sent"] is False


async def test_a_refresh_token_pull_says_post_refresh(
    env: Harness, spans: InMemorySpanExporter
) -> None:
    ts, reg = await bearer(env)
    params = StdTransportParams(
        config=config_for(reg, identitytoken=ts.issue_refresh_token("alice"))
    )
    async with env.client(params) as c:
        assert (await c.get(manifest(reg), MANIFEST)).status == 200
    assert ts.counters.post_refresh == 1
    (lookup,) = named(spans, LOOKUP)
    assert attrs(lookup)["aociauth.credentials.kind"] == "identity_token"
    (fetch,) = named(spans, FETCH)
    assert attrs(fetch)["aociauth.grant"] == "post_refresh"
    assert attrs(fetch)["aociauth.credentials.sent"] is True
    (request,) = named(spans, REQUEST)
    assert attrs(request)["http.request.method"] == "POST"


async def test_a_refused_fetch_is_an_error_named_by_class_and_status(
    env: Harness, spans: InMemorySpanExporter
) -> None:
    ts, reg = await bearer(env)
    params = StdTransportParams(config=config_for(reg, username="alice", password="wrong"))
    async with env.client(params) as c:
        with pytest.raises(TokenServerError):
            await c.get(manifest(reg), MANIFEST)
    assert ts.counters.requests == 1
    (fetch,) = named(spans, FETCH)
    assert attrs(fetch)["aociauth.outcome"] == "refused"
    assert attrs(fetch)["error.type"] == "TokenServerError"
    assert attrs(fetch)["aociauth.error.step"] == "token"
    assert attrs(fetch)["http.response.status_code"] == 401
    assert fetch.status.status_code is StatusCode.ERROR
    # The class, not the message (which names hosts and could, from a foreign error, say more).
    assert fetch.status.description == "TokenServerError"
    (request,) = named(spans, REQUEST)
    assert attrs(request)["aociauth.outcome"] == "refused"
    assert attrs(request)["error.type"] == "401"


async def test_a_token_server_without_answers_is_an_error_after_its_retries(
    env: Harness, spans: InMemorySpanExporter
) -> None:
    ts, reg = await bearer(env)
    ts.respond_with("drop", 10)  # the connection closed unanswered, each time
    async with env.client(alice(reg, retry_backoff=0.01, token_attempts=2)) as c:
        with pytest.raises(TokenServerError, match="could not be reached"):
            await c.get(manifest(reg), MANIFEST)
    (fetch,) = named(spans, FETCH)
    assert attrs(fetch)["aociauth.outcome"] == "error"
    assert attrs(fetch)["aociauth.token_requests"] == 2
    assert "http.response.status_code" not in attrs(fetch)
    assert [attrs(s)["error.type"] for s in named(spans, REQUEST)] == ["TokenServerError"] * 2


# -- what they never say -------------------------------------------------------------


async def test_no_secret_and_no_name_is_in_any_span(
    env: Harness, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(NAMES_ENV, raising=False)
    ts, reg = await bearer(env, rotate_refresh_tokens=True)
    refresh = ts.issue_refresh_token("alice")
    reg.seed_image("secretive/project", "v1")
    with_password = config_for(reg, username="alice", password=PASSWORD)
    with_refresh = config_for(reg, identitytoken=refresh)
    for config in (with_password, with_refresh):
        async with env.client(StdTransportParams(config=config)) as c:
            for repository in ("team/app", "secretive/project"):
                assert (await c.get(manifest(reg, repository), MANIFEST)).status == 200
    assert names(spans) == {LOOKUP: 2, FETCH: 4, REQUEST: 4}
    secrets = {PASSWORD, refresh, *ts.issued, *ts.refresh_tokens}
    assert len(ts.issued) == 4
    said = everything_said(spans.get_finished_spans())
    for secret in secrets:
        assert secret not in said
    for name in ("alice", "secretive", "team/app"):
        assert name not in said


async def test_names_are_recorded_when_asked_for(
    env: Harness, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NAMES_ENV, "1")
    _ts, reg = await bearer(env)
    async with env.client(alice(reg)) as c:
        assert (await c.get(manifest(reg), MANIFEST)).status == 200
    (fetch,) = named(spans, FETCH)
    assert attrs(fetch)["aociauth.scope.names"] == ("repository:team/app:pull",)
    (lookup,) = named(spans, LOOKUP)
    assert attrs(lookup)["aociauth.username"] == "alice"
    assert PASSWORD not in everything_said(spans.get_finished_spans())


# -- helpers -------------------------------------------------------------------------


HELPER_SOURCE = """\
import json, sys
server = sys.stdin.read()
if server.startswith("fail."):
    sys.stderr.write("cannot open the vault: {secret}\\n")
    sys.exit(3)
if server.startswith("none."):
    sys.stderr.write("credentials not found in native keychain\\n")
    sys.exit(1)
json.dump({{"ServerURL": server, "Username": "alice", "Secret": "{secret}"}}, sys.stdout)
"""


@pytest.fixture
def helper_env(tmp_path: Path) -> dict[str, str]:
    """An environment with ``docker-credential-otel`` on PATH and a config that uses it."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-otel"
    helper.write_text(f"#!{sys.executable}\n" + HELPER_SOURCE.format(secret=HELPER_PASSWORD))
    helper.chmod(0o755)
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "otel"}))
    return {"PATH": f"{bindir}{os.pathsep}{os.defpath}", "DOCKER_CONFIG": str(tmp_path)}


async def test_a_helper_run_is_a_child_of_the_lookup_with_its_exit_code(
    env: Harness, spans: InMemorySpanExporter, helper_env: dict[str, str]
) -> None:
    _ts, reg = await bearer(env, users={"alice": HELPER_PASSWORD})
    params = StdTransportParams(config=load_with_env(None, helper_env))
    async with env.client(params) as c:
        for _ in range(3):
            assert (await c.get(manifest(reg), MANIFEST)).status == 200
        assert c.stats.helper_runs == 1
    assert names(spans) == {LOOKUP: 1, HELPER: 1, FETCH: 1, REQUEST: 1}
    (lookup,) = named(spans, LOOKUP)
    (run,) = named(spans, HELPER)
    assert run.parent is not None
    assert lookup.context is not None
    assert run.parent.span_id == lookup.context.span_id
    assert attrs(run) == {
        "aociauth.helper.name": "otel",
        "aociauth.registry": reg.host,
        "process.exit.code": 0,
        "aociauth.credentials.kind": "basic",
        "aociauth.outcome": "ok",
    }
    assert attrs(lookup)["aociauth.credentials.source"] == "helper"
    assert attrs(lookup)["aociauth.helper.name"] == "otel"
    assert attrs(lookup)["aociauth.helper.runs"] == 1
    assert HELPER_PASSWORD not in everything_said(spans.get_finished_spans())


async def test_a_failing_helper_is_an_error_with_its_exit_code_not_its_stderr(
    spans: InMemorySpanExporter, helper_env: dict[str, str]
) -> None:
    config = load_with_env(None, helper_env)
    with pytest.raises(HelperError) as caught:
        await config.resolve("fail.example")
    assert HELPER_PASSWORD in str(caught.value)  # its stderr is in the message...
    (run,) = named(spans, HELPER)
    assert attrs(run)["process.exit.code"] == 3
    assert attrs(run)["error.type"] == "HelperError"
    assert attrs(run)["aociauth.error.step"] == "helper"
    assert run.status.status_code is StatusCode.ERROR
    assert HELPER_PASSWORD not in everything_said([run])  # ...and in no span


async def test_a_helper_without_credentials_says_so(
    spans: InMemorySpanExporter, helper_env: dict[str, str]
) -> None:
    config = load_with_env(None, helper_env)
    res = await config.resolve("none.example")
    assert res.kind == "credsStore"
    assert not res.entry.username
    (run,) = named(spans, HELPER)
    assert attrs(run)["aociauth.credentials.kind"] == "none"
    assert attrs(run)["aociauth.outcome"] == "ok"
    assert "process.exit.code" not in attrs(run)


async def test_a_helper_name_that_is_no_name_is_not_recorded(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    odd = "odd name; rm -rf ~"
    config = ConfigFile.from_dict({"credHelpers": {"example.test": odd}})
    with pytest.raises(HelperError, match="refused"):
        await config.resolve("example.test")
    (run,) = named(spans, HELPER)
    assert attrs(run)["aociauth.helper.name"] == "(invalid)"
    assert odd not in everything_said([run])


# -- without opentelemetry -----------------------------------------------------------


NO_OTEL_SCRIPT = """
import asyncio, sys
import aiohttp
from aociauth import ConfigFile, StdTransportParams, _trace, new_std_transport
from aociauth.testing import Registry, TokenServer

async def main():
    ts = TokenServer(users={"alice": "pw"})
    async with ts, Registry(auth="bearer", token_server=ts) as reg:
        reg.seed_image("team/app", "v1")
        entry = {"username": "alice", "password": "pw"}
        config = ConfigFile.from_dict({"auths": {reg.host: entry}})
        async with new_std_transport(StdTransportParams(config=config)) as mw, \\
                aiohttp.ClientSession(middlewares=[mw]) as session:
            for _ in range(3):
                accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
                async with session.get(reg.url + "/v2/team/app/manifests/v1", headers=accept) as r:
                    assert r.status == 200, r.status
        return mw.stats.token_fetches, mw.stats.config_lookups, ts.counters.requests

print(_trace.otel is None, _trace.token_fetch(None) is _trace.token_request(None, 1))
print(*asyncio.run(main()))
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""


def shadowed_env(tmp_path: Path) -> dict[str, str]:
    """This environment, with a package first on the path that makes opentelemetry absent."""
    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("opentelemetry is absent")\n')
    path = [str(shadow.parent), *sys.path]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


async def run_script(script: str, env: dict[str, str]) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(script),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return out.decode().splitlines()


async def test_without_opentelemetry_every_hook_is_one_shared_no_op(tmp_path: Path) -> None:
    lines = await run_script(NO_OTEL_SCRIPT, shadowed_env(tmp_path))
    assert lines == ["True True", "1 1 1", "[]"]


async def test_without_a_tracer_provider_every_hook_is_the_same_no_op() -> None:
    # The API is there (an application's other libraries may bring it) but no SDK is set up.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("OTEL_PYTHON_TRACER_PROVIDER", None)
    lines = await run_script(NO_OTEL_SCRIPT, env)
    assert lines[:2] == ["False True", "1 1 1"]
    assert "opentelemetry.trace" in lines[2]


# -- aociauth demo --trace -----------------------------------------------------------


async def run_demo(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aociauth",
        "demo",
        *args,
        env=env if env is not None else {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_demo_trace_prints_the_spans_as_a_tree() -> None:
    # One pull at a time: each repository's token is a fetch of its own (concurrent
    # misses would share one), so the tree has five fetches to fold.
    code, out, err = await run_demo(
        "--trace", "--repos", "5", "--latency-ms", "0", "--concurrency", "1"
    )
    assert code == 0, err
    tree = out[out.index("trace: ") :].splitlines()
    assert tree[0] == (
        "trace: 12 spans (1 aociauth demo, 1 aociauth.credential_lookup, "
        "5 aociauth.token_fetch, 5 aociauth.token_request)"
    )
    assert tree[1].startswith("aociauth demo  ")
    assert tree[2].startswith("├─ aociauth.credential_lookup  ")
    assert "credentials.source=file" in tree[2]
    fetches = [line for line in tree if line.startswith(("├─ aociauth.token_fetch", "└─"))]
    assert len(fetches) == 4  # three shown, and one line folding the other two
    assert "outcome=ok" in fetches[0]
    assert "grant=get_basic" in fetches[0]
    assert fetches[-1].startswith("└─ … 2 more aociauth.token_fetch (2 ok; ")
    requests = [line for line in tree if line.startswith("│  └─ aociauth.token_request  ")]
    assert len(requests) == 3
    # A child does not repeat what its parent said.
    assert all("http.response.status_code=200" in r and "grant=" not in r for r in requests)


async def test_demo_trace_says_what_to_install_without_the_sdk(tmp_path: Path) -> None:
    code, out, err = await run_demo("--trace", "--repos", "1", env=shadowed_env(tmp_path))
    assert code == 5
    assert "pip install 'aociauth[otel]' opentelemetry-sdk" in err
    assert out == ""


async def test_demo_trace_does_not_go_with_json() -> None:
    code, _, err = await run_demo("--trace", "--json", "--repos", "1")
    assert code == 2
    assert "--trace" in err


# -- the example -----------------------------------------------------------------------


def test_the_example_prints_spans_and_metrics_that_agree() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "observability.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # Five images, each pulled three times: a fetch each, and the rest from the cache.
    assert "span aociauth.credential_lookup: 1" in lines
    assert "span aociauth.token_fetch: 5" in lines
    assert "span aociauth.token_request: 5" in lines
    assert "metric aociauth.requests: 15" in lines
    assert "metric aociauth.token_fetches: 5" in lines
    assert "metric aociauth.token_requests{grant=get_basic}: 5" in lines
    assert "metric aociauth.cache_hits: 10" in lines
