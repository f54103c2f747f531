"""What users do against the zoo, the audit of every request, and the per-registry report.

Each :class:`Flow` is what a real client does, driven through the
middleware's public API only (``new_std_transport``, ``StdTransportParams``,
``load_with_env``, ``with_scope``, ``mw.stats``), each with a middleware of
its own, as a fresh process would have:

* ``public_pull``: an anonymous pull of a public image, blobs through the CDN hop;
* ``private_pull``: a pull with the registry's real config form (per-namespace
  robots on Quay, the identity token on ACR, a helper on ECR, GCR, AR);
* ``token_revoked``: the registry stops taking the tokens it issued (a key
  rotation, a token expired early) between two pulls of one middleware;
* ``burst``: 50 concurrent pulls over 10 repositories;
* ``mount``: a cross-repository blob mount;
* ``wrong_password``: a clear error, with the token requests bounded (no loop);
* ``expired_helper``: the helper's credential expires between two pulls and the
  helper hands out a new one;
* ``one_scope_batch``: a ``with_scope`` batch against a token server that reads
  one ``scope`` parameter (GitLab);
* ``rate_limit``: Docker Hub's 429 ``TOOMANYREQUESTS``, passed back with its
  headers and no token refetch.

:func:`run_flow` runs one and audits the requests it made (:func:`audit`):
credentials and tokens reach only their own registry's hosts, never a CDN.
:func:`run_zoo` runs them all; :func:`summarize` and :func:`format_table`
make the report ``python -m aociauth.testing.zoo`` prints.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from multidict import CIMultiDictProxy

from aociauth.config import ConfigFile
from aociauth.context import with_scope
from aociauth.errors import OCIAuthError
from aociauth.scope import ACTION_PULL, TYPE_REPOSITORY, ResourceScope, new_scope
from aociauth.testing._http import Exchange
from aociauth.testing._jwt import TokenIssuer
from aociauth.testing.registry import OCI_INDEX, OCI_MANIFEST
from aociauth.testing.zoo.profiles import PROFILES, RegistryProfile
from aociauth.testing.zoo.servers import Zoo, ZooRegistry

__all__ = [
    "FLOWS",
    "Flow",
    "FlowFailed",
    "FlowOutcome",
    "RegistryReport",
    "Watch",
    "audit",
    "format_table",
    "outcomes_as_json",
    "pull",
    "run_flow",
    "run_zoo",
    "summarize",
]

#: Seconds any flow may take before it counts as hung.
FLOW_TIMEOUT = 30.0

_ACCEPT = ", ".join(
    (
        OCI_MANIFEST,
        OCI_INDEX,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
_BURST_PULLS = 50
_BURST_REPOSITORIES = 10


class FlowFailed(Exception):
    """A flow did not get what a user would have got."""


@dataclass
class Watch:
    """The requests of one flow against one registry: the zoo's exchanges from ``start`` on."""

    zoo: Zoo
    zr: ZooRegistry
    start: int
    #: Which client drives the flow: ``"aiohttp"`` (the middleware) or ``"httpx"``.
    adapter: str = "aiohttp"

    def client(self, config: ConfigFile | None, **params: Any) -> Any:
        """The zoo's client for this flow's adapter (see :meth:`Zoo.client`)."""
        return self.zoo.client(config, adapter=self.adapter, **params)

    @property
    def profile(self) -> RegistryProfile:
        """The registry's profile."""
        return self.zr.profile

    def exchanges(self) -> list[Exchange]:
        """Every request any zoo server received since the flow began."""
        return self.zoo.exchanges[self.start :]

    def token_requests(self) -> list[Exchange]:
        """The requests to this registry's token endpoint."""
        p = self.profile
        if p.auth != "bearer":
            return []
        return [e for e in self.exchanges() if e.host == p.realm_host and e.path == p.token_path]

    def unauthorized(self) -> list[Exchange]:
        """The registry's 401 answers (token endpoint excluded)."""
        p = self.profile
        return [
            e
            for e in self.exchanges()
            if e.host == p.registry_host and e.status == 401 and e.path != p.token_path
        ]

    def cdn_hops(self) -> list[Exchange]:
        """The requests to the registry's CDN or object store."""
        host = self.profile.blob_host
        return [e for e in self.exchanges() if host and e.host == host]


@dataclass(frozen=True)
class Manifest:
    """A manifest GET's answer."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


async def get_manifest(
    session: aiohttp.ClientSession, zr: ZooRegistry, repository: str, tag: str = "v1"
) -> Manifest:
    """GET a manifest as a pulling client does (OCI and Docker types in Accept)."""
    url = zr.url(f"/v2/{repository}/manifests/{tag}")
    async with session.get(url, headers={"Accept": _ACCEPT}) as resp:
        return Manifest(resp.status, resp.headers, await resp.read())


async def pull(
    session: aiohttp.ClientSession, zr: ZooRegistry, repository: str, tag: str = "v1"
) -> int:
    """Pull an image: its manifest, then every blob (following redirects); return bytes read.

    Raises :class:`FlowFailed` for any answer but 200 and for a blob whose
    content does not match its digest.
    """
    manifest = await get_manifest(session, zr, repository, tag)
    if manifest.status != 200:
        raise FlowFailed(f"GET manifest {repository}:{tag} answered {manifest.status}")
    parsed = json.loads(manifest.body)
    total = len(manifest.body)
    for descriptor in (parsed["config"], *parsed["layers"]):
        digest = descriptor["digest"]
        async with session.get(zr.url(f"/v2/{repository}/blobs/{digest}")) as resp:
            data = await resp.read()
            if resp.status != 200:
                raise FlowFailed(f"GET blob of {repository} answered {resp.status}")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise FlowFailed(f"blob of {repository} does not match its digest")
        total += len(data)
    return total


# -- the flows -------------------------------------------------------------------


async def public_pull(w: Watch) -> str:
    """Pull a public image anonymously; its blobs come through the CDN when the registry
    redirects them."""
    zr = w.zr
    repository = f"{w.profile.anonymous_namespace}/tool"
    zr.seed(repository)
    async with w.client(ConfigFile()) as (_, session):
        await pull(session, zr, repository)
    hops = len(w.cdn_hops())
    if w.profile.blob_host and hops < 2:
        raise FlowFailed(f"expected two blob downloads from {w.profile.blob_host}, saw {hops}")
    return f"{hops} CDN hops"


async def private_pull(w: Watch) -> str:
    """Pull from every private namespace with the registry's real config form."""
    zr = w.zr
    config = w.zoo.load_config(w.zoo.config_document(zr.key))
    async with w.client(config) as (_, session):
        for namespace in w.profile.namespaces:
            repository = f"{namespace}/app"
            zr.seed(repository)
            await pull(session, zr, repository)
    _check_identities(w)
    return _check_grants(w)


def _check_grants(w: Watch) -> str:
    """The token requests took the form the registry's credentials call for."""
    requests = w.token_requests()
    kinds = sorted({e.method for e in requests})
    if w.profile.auth == "basic":
        basic = [e for e in w.exchanges() if e.headers.get("Authorization", "").startswith("Basic")]
        if requests or not basic:
            raise FlowFailed("a Basic registry's pull did not go with Basic credentials")
        return "Basic on the registry"
    if w.profile.credential.kind == "identitytoken" or w.profile.credential.user == "<token>":
        # An identity token is a refresh token: the OAuth2 refresh grant, never a GET.
        grants = [dict(parse_qsl(e.body.decode())).get("grant_type") for e in requests]
        if kinds != ["POST"] or set(grants) != {"refresh_token"}:
            raise FlowFailed(f"identity token used with {kinds} {grants}")
        return "refresh grant"
    if kinds != ["GET"] or not all(
        e.headers.get("Authorization", "").startswith("Basic") for e in requests
    ):
        raise FlowFailed(f"token requests were {kinds}, not GET with Basic credentials")
    return "GET with Basic"


def _check_identities(w: Watch) -> None:
    """Each namespace's token requests carried that namespace's own robot (Quay)."""
    if w.profile.credential.kind != "namespaces":
        return
    for exchange in w.token_requests():
        user = _basic_user(exchange.headers.get("Authorization", ""))
        scopes = " ".join(v for k, v in parse_qsl(exchange.query) if k == "scope")
        for namespace in w.profile.namespaces:
            if f"repository:{namespace}/" in scopes and user != w.zr.identity(namespace):
                raise FlowFailed(f"a token request for {namespace} came as {user!r}")


async def token_revoked(w: Watch) -> str:
    """Pull; the registry stops taking the tokens it issued (a key rotation, a token
    expired before its time); pull again with the same middleware."""
    zr, zoo = w.zr, w.zoo
    token_server = zr.token_server
    assert token_server is not None
    namespace = w.profile.namespaces[0]
    config = zoo.load_config(zoo.config_document(zr.key))
    async with w.client(config) as (_, session):
        zr.seed(f"{namespace}/app")
        await pull(session, zr, f"{namespace}/app")
        token_server.issuer = TokenIssuer(service=token_server.service)
        token_server.revoke_opaque_tokens()
        await pull(session, zr, f"{namespace}/app")
    return f"{len(w.token_requests())} token requests"


async def burst(w: Watch) -> str:
    """50 concurrent pulls over 10 repositories of one namespace, by one middleware."""
    zr = w.zr
    namespace = w.profile.namespaces[0]
    repositories = [f"{namespace}/svc-{i}" for i in range(_BURST_REPOSITORIES)]
    for repository in repositories:
        zr.seed(repository)
    config = w.zoo.load_config(w.zoo.config_document(zr.key))
    async with w.client(config) as (_, session):
        pulls = [
            pull(session, zr, repositories[i % len(repositories)]) for i in range(_BURST_PULLS)
        ]
        await asyncio.gather(*pulls)
    tokens = len(w.token_requests())
    # One token per repository, plus at most one for the first contact's challenge.
    if tokens > len(repositories) + 1:
        raise FlowFailed(f"{tokens} token requests for {len(repositories)} repositories")
    return f"{tokens} token requests"


async def mount(w: Watch) -> str:
    """Mount a layer of one repository into another without uploading it."""
    zr = w.zr
    namespace = w.profile.namespaces[0]
    source, target = f"{namespace}/base", f"{namespace}/derived"
    layer = zr.seed(source).layer_digests[0]
    config = w.zoo.load_config(w.zoo.config_document(zr.key))
    async with w.client(config) as (_, session):
        url = zr.url(f"/v2/{target}/blobs/uploads/?mount={layer}&from={source}")
        async with session.post(url) as resp:
            status = resp.status
    if status != 201 or not zr.registry.has_blob(target, layer):
        raise FlowFailed(f"mount answered {status}")
    return "mounted"


async def wrong_password(w: Watch) -> str:
    """Two pulls with a wrong password (or refresh token) end in a clear error, each bounded."""
    zr = w.zr
    repository = f"{w.profile.namespaces[0]}/app"
    zr.seed(repository)
    config = w.zoo.load_config(w.zoo.config_document(zr.key, wrong=True))
    errors = []
    async with w.client(config) as (_, session):
        for _ in range(2):
            try:
                await pull(session, zr, repository)
            except OCIAuthError as exc:
                if w.profile.registry_host not in str(exc):
                    raise FlowFailed(f"the error does not name the registry: {exc}") from None
                errors.append(type(exc).__name__)
            except FlowFailed as exc:
                errors.append(str(exc).rsplit(" ", 1)[-1])
            else:
                raise FlowFailed("pulled with a wrong password")
    tokens, unauthorized = len(w.token_requests()), len(w.unauthorized())
    # Per attempt: at most the challenge's 401, one refused retry, and one token request
    # for each (a loop would show as many more).
    if tokens > 4 or unauthorized > 4:
        raise FlowFailed(f"{tokens} token requests and {unauthorized} 401s for two pulls")
    return "refused: " + ", ".join(errors)


async def expired_helper(w: Watch) -> str:
    """Pull; the helper's credential expires and it hands out a new one; pull again."""
    zr, zoo = w.zr, w.zoo
    form = w.profile.helper_credential
    assert form is not None
    config = zoo.load_config(zoo.config_document(zr.key, form))
    namespace = w.profile.namespaces[0]
    earlier = len(zoo.helper_runs())  # other flows' runs, in a zoo shared with them
    async with w.client(config) as (_, session):
        zr.seed(f"{namespace}/before")
        await pull(session, zr, f"{namespace}/before")
        old = zoo.helper_answer(form.helper, form.key)[1]
        new = zr.expire(form.user, old)
        zoo.set_helper_answer(form.helper, form.key, form.user, new)
        zr.seed(f"{namespace}/after")
        try:
            await pull(session, zr, f"{namespace}/after")
        except OCIAuthError as exc:
            raise FlowFailed(f"after the helper's credential expired: {exc}") from None
    runs = len(zoo.helper_runs()) - earlier
    # One run for the first pull, one when its answer was refused: never one per request.
    if runs != 2:
        raise FlowFailed(f"{runs} helper runs for two pulls across one expiry")
    return f"{runs} helper runs"


async def one_scope_batch(w: Watch) -> str:
    """A ``with_scope`` batch of 10 repositories, then their pulls, against a one-scope reader."""
    zr = w.zr
    namespace = w.profile.namespaces[0]
    repositories = [f"{namespace}/batch-{i}" for i in range(10)]
    for repository in repositories:
        zr.seed(repository)
    wanted = new_scope(*(ResourceScope(TYPE_REPOSITORY, r, ACTION_PULL) for r in repositories))
    config = w.zoo.load_config(w.zoo.config_document(zr.key))
    failed = []
    async with w.client(config) as (_, session):
        with with_scope(wanted):
            for repository in repositories:
                try:
                    await pull(session, zr, repository)
                except FlowFailed:
                    failed.append(repository)
    if failed:
        raise FlowFailed(f"{len(failed)} of {len(repositories)} pulls of the batch failed")
    return f"{len(w.token_requests())} token requests"


async def rate_limit(w: Watch) -> str:
    """The last pull of the rate limit, then 429 TOOMANYREQUESTS: passed back, no refetch."""
    zr = w.zr
    registry = zr.registry
    assert registry.pull_limit is not None
    repository = f"{w.profile.anonymous_namespace}/alpine"
    zr.seed(repository)
    # Anonymous tokens have the empty subject; it has used all but one pull.
    registry.pulls[""] = registry.pull_limit - 1
    try:
        async with w.client(ConfigFile()) as (mw, session):
            await pull(session, zr, repository)
            tokens = len(w.token_requests())
            refused = await get_manifest(session, zr, repository)
            stats = mw.stats
    finally:
        registry.pulls.clear()
    body = json.loads(refused.body) if refused.status == 429 else {}
    codes = [e.get("code") for e in body.get("errors", [])]
    if refused.status != 429 or codes != ["TOOMANYREQUESTS"]:
        raise FlowFailed(f"expected 429 TOOMANYREQUESTS, got {refused.status} {codes}")
    if not refused.headers.get("RateLimit-Remaining", "").startswith("0;"):
        raise FlowFailed("the 429 lost its RateLimit-Remaining header")
    if len(w.token_requests()) != tokens or stats.registry_429s != 1:
        raise FlowFailed("a 429 made the middleware fetch a token or went uncounted")
    return "429 passed back"


@dataclass(frozen=True)
class Flow:
    """A flow, the registries it applies to, and the issue that makes it fail today (if any)."""

    name: str
    run: Callable[[Watch], Awaitable[str]]
    applies: Callable[[RegistryProfile], bool]
    known_issue: Callable[[RegistryProfile], str | None]


def _always(_: RegistryProfile) -> bool:
    return True


def _no_issue(_: RegistryProfile) -> str | None:
    return None


FLOWS: tuple[Flow, ...] = (
    Flow("public_pull", public_pull, lambda p: bool(p.anonymous_namespace), _no_issue),
    Flow("private_pull", private_pull, _always, _no_issue),
    Flow(
        "token_revoked",
        token_revoked,
        lambda p: p.auth == "bearer",
        _no_issue,
    ),
    Flow("burst", burst, _always, _no_issue),
    Flow(
        "mount",
        mount,
        lambda p: p.mount,
        _no_issue,
    ),
    Flow("wrong_password", wrong_password, _always, _no_issue),
    Flow(
        "expired_helper",
        expired_helper,
        lambda p: p.helper_credential is not None,
        _no_issue,
    ),
    Flow(
        "one_scope_batch",
        one_scope_batch,
        lambda p: p.scope_reading != "all",
        _no_issue,
    ),
    Flow("rate_limit", rate_limit, lambda p: p.pull_limit is not None, _no_issue),
)
"""Every flow, in the order the report runs them."""


# -- the audit ---------------------------------------------------------------------


def _basic_user(header: str) -> str | None:
    return _basic_pair(header)[0]


def _basic_pair(header: str) -> tuple[str | None, str | None]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, _, password = decoded.partition(":")
    return user, password


def _text(exchange: Exchange) -> str:
    """Everything of a request a secret could hide in, but its Authorization header."""
    heads = "\n".join(
        f"{k}: {v}" for k, v in exchange.headers.items() if k.lower() != "authorization"
    )
    return f"{exchange.path}?{exchange.query}\n{heads}\n" + exchange.body.decode("latin-1")


def audit(zoo: Zoo, exchanges: Sequence[Exchange] | None = None) -> list[str]:
    """What went where it must not, in ``exchanges`` (default: every request so far).

    * A CDN or object store receives no Authorization, Proxy-Authorization
      or Cookie header, and no password, refresh token or bearer token anywhere.
    * Basic credentials reach only the registry and token hosts of the
      registry whose secret the password is.
    * A bearer token reaches only a registry whose own token server issued it.
    * A password or refresh token appears (in a query, header or body) only at
      its own registry's hosts.

    Returns one line per problem, naming the host, the request and whose
    secret it was, never the secret.
    """
    seen = list(zoo.exchanges if exchanges is None else exchanges)
    owners: dict[str, set[str]] = {}
    secrets: dict[str, str] = {}
    for zr in zoo.registries.values():
        for host in zr.profile.own_hosts:
            owners.setdefault(host, set()).add(zr.key)
        secrets.update(dict.fromkeys(zr.secrets, zr.key))
    tokens = {
        value.partition(" ")[2]
        for e in seen
        for value in e.headers.getall("Authorization", [])
        if value.lower().startswith("bearer ")
    }
    problems: list[str] = []
    for e in seen:
        where = f"{e.method} https://{e.host}{e.path}"
        own = owners.get(e.host, set())
        if e.host in zoo.cdn_hosts and not own:
            problems += _cdn_problems(e, where, tokens)
        for value in e.headers.getall("Authorization", []):
            problems += _authorization_problems(zoo, value, own, secrets, where)
        text = _text(e)
        for secret, owner in secrets.items():
            if secret in text and owner not in own:
                problems.append(f"{where} received a secret of {owner}")
    return problems


def _cdn_problems(e: Exchange, where: str, tokens: Iterable[str]) -> list[str]:
    found = [
        f"{where} (a CDN) received {name}"
        for name in ("Authorization", "Proxy-Authorization", "Cookie")
        if name in e.headers
    ]
    text = _text(e)
    if any(token in text for token in tokens):
        found.append(f"{where} (a CDN) received a bearer token")
    return found


def _authorization_problems(
    zoo: Zoo, value: str, own: set[str], secrets: dict[str, str], where: str
) -> list[str]:
    scheme, _, credential = value.partition(" ")
    if scheme.lower() == "basic":
        user, password = _basic_pair(value)
        owner = secrets.get(password or "")
        if owner is None:
            return [f"{where} received Basic credentials that are no zoo secret (user {user!r})"]
        if owner not in own:
            return [f"{where} received the Basic credentials of {owner} (user {user!r})"]
        return []
    if scheme.lower() == "bearer":
        for key in own:
            token_server = zoo.registries[key].token_server
            if token_server is not None and credential in token_server.issued:
                return []
        return [f"{where} received a bearer token its registry's token server did not issue"]
    return [f"{where} received an Authorization of scheme {scheme!r}"]


# -- running and reporting -----------------------------------------------------------


@dataclass(frozen=True)
class FlowOutcome:
    """One flow against one registry: whether it got what a user would, and what it cost.

    ``unauthorized`` counts the registry's 401 answers, ``token_requests``
    the requests to its token endpoint, ``requests`` every request to any
    zoo host; ``leaks`` is the audit of those requests; ``known_issue`` says
    which open issue makes the flow fail today, when one does.
    """

    registry: str
    flow: str
    passed: bool
    detail: str
    leaks: tuple[str, ...]
    unauthorized: int
    token_requests: int
    requests: int
    known_issue: str | None
    #: The client that drove the flow: ``"aiohttp"`` or ``"httpx"``.
    adapter: str = "aiohttp"


async def run_flow(zoo: Zoo, key: str, flow: Flow, adapter: str = "aiohttp") -> FlowOutcome:
    """Run ``flow`` against the zoo's registry ``key`` through ``adapter`` (``"aiohttp"``
    or ``"httpx"``), then audit its requests."""
    zr = zoo[key]
    watch = Watch(zoo, zr, len(zoo.exchanges), adapter)
    failures: tuple[type[BaseException], ...] = (
        FlowFailed,
        OCIAuthError,
        aiohttp.ClientError,
        asyncio.TimeoutError,
    )
    if adapter == "httpx":
        import httpx

        failures += (httpx.HTTPError,)
    try:
        detail = await asyncio.wait_for(flow.run(watch), FLOW_TIMEOUT)
        passed = True
    except failures as exc:
        passed = False
        detail = f"{type(exc).__name__}: {exc}"
    return FlowOutcome(
        registry=key,
        flow=flow.name,
        passed=passed,
        detail=detail,
        leaks=tuple(audit(zoo, watch.exchanges())),
        unauthorized=len(watch.unauthorized()),
        token_requests=len(watch.token_requests()),
        requests=len(watch.exchanges()),
        known_issue=flow.known_issue(zr.profile),
        adapter=adapter,
    )


async def run_zoo(
    workdir: Path | str,
    profiles: Iterable[RegistryProfile] = PROFILES,
    adapters: Sequence[str] = ("aiohttp",),
) -> list[FlowOutcome]:
    """Run every applicable flow against every registry of one zoo, one after another,
    through each of ``adapters``."""
    chosen = tuple(profiles)
    outcomes = []
    async with Zoo(chosen, workdir=workdir) as zoo:
        for adapter in adapters:
            for profile in chosen:
                for flow in FLOWS:
                    if flow.applies(profile):
                        outcomes.append(await run_flow(zoo, profile.key, flow, adapter))
    return outcomes


@dataclass(frozen=True)
class RegistryReport:
    """One row of the report: a registry's flows, 401s, token requests and failures."""

    registry: str
    passed: int
    flows: int
    unauthorized: int
    token_requests: int
    failures: tuple[str, ...]
    leaks: int


def summarize(
    outcomes: Iterable[FlowOutcome], profiles: Iterable[RegistryProfile] = PROFILES
) -> list[RegistryReport]:
    """One :class:`RegistryReport` per registry that ran, in profile order."""
    by_key: dict[tuple[str, str], list[FlowOutcome]] = {}
    for outcome in outcomes:
        by_key.setdefault((outcome.registry, outcome.adapter), []).append(outcome)
    adapters = dict.fromkeys(adapter for _, adapter in by_key)
    reports = []
    for adapter in adapters:
        for profile in profiles:
            ran = by_key.get((profile.key, adapter))
            if not ran:
                continue
            failures = tuple(
                o.flow + (f" ({o.known_issue.split(':', 1)[0]})" if o.known_issue else "")
                for o in ran
                if not o.passed
            )
            reports.append(
                RegistryReport(
                    # The aiohttp middleware's rows keep the registry's name alone.
                    registry=profile.name
                    if adapter == "aiohttp"
                    else f"{profile.name} ({adapter})",
                    passed=sum(o.passed for o in ran),
                    flows=len(ran),
                    unauthorized=sum(o.unauthorized for o in ran),
                    token_requests=sum(o.token_requests for o in ran),
                    failures=failures,
                    leaks=sum(len(o.leaks) for o in ran),
                )
            )
    return reports


def format_table(reports: Iterable[RegistryReport]) -> str:
    """The report as a Markdown table."""
    rows = [
        "| registry | flows passed | 401s | token requests | leaks | failures |",
        "|---|---|---|---|---|---|",
    ]
    for r in reports:
        failures = ", ".join(r.failures) or "-"
        rows.append(
            f"| {r.registry} | {r.passed}/{r.flows} | {r.unauthorized} | {r.token_requests} "
            f"| {r.leaks} | {failures} |"
        )
    return "\n".join(rows)


def outcomes_as_json(outcomes: Iterable[FlowOutcome]) -> list[dict[str, Any]]:
    """The outcomes as plain dicts, for ``--json``."""
    return [dict(o.__dict__, leaks=list(o.leaks)) for o in outcomes]
