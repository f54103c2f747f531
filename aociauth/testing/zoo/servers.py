"""The zoo's servers: each profile's registry, token server and CDN, over https on loopback.

:class:`Zoo` starts, for every :class:`~aociauth.testing.zoo.RegistryProfile`,
a :class:`~aociauth.testing.Registry` on the registry's host name, its
:class:`~aociauth.testing.TokenServer` (on a host of its own, as Docker
Hub's auth.docker.io and GitLab's gitlab.com, or inside the registry, as
everywhere else) and a :class:`~aociauth.testing.RecordingServer` for the
CDN or object store blob downloads are redirected to. Every server listens
on 127.0.0.1 on a port of its own, with a certificate from one throwaway CA
(:func:`aociauth.testing.tls.make_tls`) naming every zoo host.

:class:`ZooResolver` maps the zoo's host names, and only those, to their
ports: URLs keep their real form (``https://ghcr.io/v2/...``, port 443) and
a name outside the zoo fails to resolve, so nothing leaves the machine.
Every request any server receives is appended to :attr:`Zoo.exchanges`,
headers and body included, for the audit (:func:`aociauth.testing.zoo.audit`).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import secrets
import socket
import stat
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from aociauth.config import ConfigFile, load_with_env
from aociauth.middleware import new_std_transport
from aociauth.params import StdTransportParams
from aociauth.testing._http import Exchange, LoopbackServer
from aociauth.testing.client import numeric_answer
from aociauth.testing.registry import RecordingServer, Registry, SeededImage
from aociauth.testing.tls import TLSContexts, make_tls
from aociauth.testing.tokenserver import TokenServer
from aociauth.testing.zoo.profiles import PROFILES, CredentialForm, RegistryProfile

if TYPE_CHECKING:
    import httpx

__all__ = ["Zoo", "ZooHostError", "ZooRegistry", "ZooResolver"]


class ZooHostError(OSError):
    """A name the zoo does not serve was looked up: the zoo never lets a request leave.

    An OSError, as aiohttp expects of a resolver: it reaches the caller as the
    ``ClientConnectorDNSError`` any unresolvable name gives.
    """


class ZooResolver(AbstractResolver):
    """Resolves the zoo's host names to 127.0.0.1 and their server's port; refuses all others.

    The port asked for (443 for an https URL) is replaced by the port the
    host's server listens on, so URLs keep their real form. ``asked`` lists
    every name looked up, refused ones included.
    """

    def __init__(self, ports: Mapping[str, int]) -> None:
        self._ports = dict(ports)
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The loopback address and port of a zoo host; :class:`ZooHostError` for any other."""
        self.asked.append(host)
        name = host.lower().rstrip(".")
        found = self._ports.get(name)
        if found is None:
            raise ZooHostError(f"{host} is not a zoo host; the zoo resolves only its own names")
        return [numeric_answer(host, "127.0.0.1", found)]

    async def close(self) -> None:
        """Nothing to release."""


# A credential helper as the real ones behave: the server URL on stdin, one JSON
# object on stdout, "credentials not found" and exit 1 for a server it does not know.
# Its answers come from a state file the zoo rewrites when a credential expires,
# as the real helpers fetch a new token (ECR's GetAuthorizationToken, gcloud's
# access token, ACR's AAD exchange) once theirs has run out.
_HELPER_SCRIPT = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])[len("docker-credential-"):]
if sys.argv[1:] != ["get"]:
    sys.stderr.write("only get is implemented\\n")
    sys.exit(1)
server = sys.stdin.read().strip()
host = server.split("://", 1)[-1].split("/", 1)[0]
with open({state!r}) as f:
    answers = json.load(f).get(name, {{}})
with open({runs!r}, "a") as f:
    f.write(name + " " + host + "\\n")
answer = answers.get(host)
if answer is None:
    sys.stdout.write("credentials not found in native keychain\\n")
    sys.exit(1)
sys.stdout.write(json.dumps({{"ServerURL": server, "Username": answer[0], "Secret": answer[1]}}))
"""


#: The principal behind ACR's identity tokens (an Entra ID service principal, in life).
SERVICE_PRINCIPAL = "acme-sp"

# The user names that stand for "the secret is an identity token": a helper's
# "<token>" (docker/cli) and az acr login's all-zero GUID.
_TOKEN_PLACEHOLDERS = frozenset({"<token>", "00000000-0000-0000-0000-000000000000"})


def _secret(label: str) -> str:
    # Long and distinctive, so that finding one in a request is never a coincidence.
    return f"zoo-{label}-{secrets.token_urlsafe(18)}"


@dataclass
class ZooRegistry:
    """One emulated registry, running: its servers, users and secrets.

    ``users`` maps each identity's user name to its current password (or,
    for an identity token, refresh token); ``secrets`` maps every secret the
    zoo ever made for this registry (wrong and expired ones included) to a
    label, for the audit.
    """

    profile: RegistryProfile
    registry: Registry
    token_server: TokenServer | None
    users: dict[str, str] = field(default_factory=dict, repr=False)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        """The profile's key (``"ghcr"``)."""
        return self.profile.key

    def url(self, path: str) -> str:
        """``https://<registry host><path>``: what a user writes."""
        return f"https://{self.profile.registry_host}{path}"

    def identity(self, namespace: str) -> str:
        """The user name that may push and pull in ``namespace``."""
        form = self.profile.credential
        if form.kind == "namespaces":
            return f"{namespace}{form.user}"
        return form.user

    def seed(self, repository: str, tag: str = "v1") -> SeededImage:
        """Store a small image in ``repository``, with a layer of its own."""
        return self.registry.seed_image(repository, tag)

    def new_secret(self, label: str) -> str:
        """A fresh secret, remembered for the audit (wrong passwords are secrets too)."""
        value = _secret(f"{self.key}-{label}")
        self.secrets[value] = label
        return value

    def set_password(self, user: str, password: str) -> None:
        """Make ``password`` the one ``user`` is accepted with, wherever credentials are checked."""
        self.users[user] = password
        if self.token_server is not None:
            self.token_server.users[user] = password
        if self.profile.auth == "basic" or self.profile.harbor_mixed:
            self.registry.users[user] = password

    def issue_refresh_token(self, user: str) -> str:
        """A refresh token for ``user``, which the OAuth2 refresh grant accepts."""
        if self.token_server is None:
            raise RuntimeError(f"{self.profile.name} has no token server")
        token = self.token_server.issue_refresh_token(user)
        self.secrets[token] = f"refresh token of {user}"
        return token

    def expire(self, user: str, old: str) -> str:
        """``user``'s credential ``old`` stops being accepted; return its replacement.

        A password is refused from now on (ECR answers it 403 "Your
        authorization token has expired"); a refresh token is revoked.
        """
        if self.token_server is not None and old in self.token_server.refresh_tokens:
            del self.token_server.refresh_tokens[old]
            return self.issue_refresh_token(self.token_server_subject(user))
        new = self.new_secret(f"{user}-renewed")
        self.set_password(user, new)
        if self.profile.auth == "basic":
            self.registry.expired_passwords.add(old)
        return new

    def token_server_subject(self, user: str) -> str:
        """The subject a refresh token of ``user`` stands for."""
        # A refresh token's identity is the principal behind it, not the
        # placeholder user name the config shows.
        return SERVICE_PRINCIPAL if user in _TOKEN_PLACEHOLDERS else user


class Zoo:
    """The registries of ``profiles``, running on loopback under their real names.

    Use it as an async context manager. ``workdir`` (a directory the caller
    owns, e.g. pytest's ``tmp_path``) receives the fake credential helpers
    and the config files flows write. :meth:`client` makes a middleware and
    a session that reach the zoo, and only the zoo.
    """

    def __init__(
        self, profiles: Iterable[RegistryProfile] = PROFILES, *, workdir: Path | str
    ) -> None:
        self.profiles = tuple(profiles)
        if not self.profiles:
            raise ValueError("a zoo needs at least one registry")
        self.workdir = Path(workdir)
        self.exchanges: list[Exchange] = []
        """Every request every zoo server received, in arrival order."""
        self.registries: dict[str, ZooRegistry] = {}
        self.ports: dict[str, int] = {}
        self.cdn_hosts: frozenset[str] = frozenset()
        self.tls: TLSContexts | None = None
        self._servers: list[LoopbackServer] = []
        self._helper_answers: dict[str, dict[str, tuple[str, str]]] = {}
        self._configs = 0

    def __getitem__(self, key: str) -> ZooRegistry:
        return self.registries[key]

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> Zoo:
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
        """Make the CA, start every server, write the helpers."""
        names = [h for p in self.profiles for h in p.hosts]
        self.tls = tls = make_tls(names, common_name="aociauth zoo CA")
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        try:
            cdn_blobs: dict[str, list[dict[str, bytes]]] = collections.defaultdict(list)
            for profile in self.profiles:
                zr = await self._start_registry(profile, tls)
                if profile.blob_host:
                    cdn_blobs[profile.blob_host].append(zr.registry.blobs)
            for host, blob_maps in cdn_blobs.items():
                # One object store may serve several registries (GCS for GCR, Artifact
                # Registry and GitLab): it serves what any of them stores.
                cdn = RecordingServer(
                    blobs=collections.ChainMap(*blob_maps),
                    ssl_context=tls.server,
                    tap=self.exchanges,
                )
                await self._run(cdn, host)
            self.cdn_hosts = frozenset(cdn_blobs)
        except BaseException:
            await self.stop()
            raise
        self._write_helpers()

    async def stop(self) -> None:
        """Stop every server."""
        servers, self._servers = self._servers, []
        for server in reversed(servers):
            await server.stop()

    async def _run(self, server: LoopbackServer, host: str) -> None:
        if host in self.ports:
            raise ValueError(f"two zoo servers for {host}")
        await server.start()
        self._servers.append(server)
        self.ports[host] = server.port

    async def _start_registry(self, profile: RegistryProfile, tls: TLSContexts) -> ZooRegistry:
        token_server = None
        if profile.auth == "bearer":
            token_server = TokenServer(
                service=profile.service,
                path=profile.token_path,
                token_field=profile.token_field,
                expires_in=profile.expires_in,
                support_post=profile.post == "oauth2",
                post_unsupported_status=profile.post if profile.post != "oauth2" else 404,
                scope_reading=profile.scope_reading,
                opaque_tokens=profile.opaque_tokens,
                remember_tokens=True,
                ssl_context=tls.server,
                tap=self.exchanges,
            )
        blob_redirect = (
            f"https://{profile.blob_host}{profile.blob_path}" if profile.blob_host else None
        )
        registry = Registry(
            auth=profile.auth,
            token_server=token_server,
            realm=profile.realm if token_server is not None else None,
            service=profile.service if token_server is not None else None,
            basic_realm=profile.basic_realm,
            basic_service=profile.basic_service,
            token_path=profile.token_path if token_server and not profile.token_host else None,
            blob_redirect=blob_redirect,
            blob_redirect_style=profile.blob_style,
            challenge_scope=profile.challenge_scope,
            accept_basic=profile.harbor_mixed,
            basic_challenge_after_refusal=profile.harbor_mixed,
            pull_limit=profile.pull_limit,
            ssl_context=tls.server,
            tap=self.exchanges,
        )
        zr = ZooRegistry(profile, registry, token_server)
        self.registries[profile.key] = zr
        await self._run(registry, profile.registry_host)
        if token_server is not None and profile.token_host:
            await self._run(token_server, profile.token_host)
        self._grant(zr)
        return zr

    def _grant(self, zr: ZooRegistry) -> None:
        """Users and grants: each identity may push and pull its namespace; anyone may pull
        the public namespace."""
        profile = zr.profile
        grants: dict[str | None, dict[str, set[str]]] = {}
        if profile.anonymous_namespace:
            grants[None] = {f"repository:{profile.anonymous_namespace}/*": {"pull"}}
        for namespace in profile.namespaces:
            user = zr.identity(namespace)
            subject = zr.token_server_subject(user)
            if profile.credential.kind != "identitytoken":
                zr.set_password(user, zr.new_secret(f"{user}-password"))
            grants.setdefault(subject, {})[f"repository:{namespace}/*"] = {"pull", "push"}
        helper = profile.helper_credential
        if helper is not None and helper.user != "<token>":
            user = helper.user
            if user not in zr.users:
                zr.set_password(user, zr.new_secret(f"{user}-password"))
        if zr.token_server is not None:
            zr.token_server.grants = grants

    # -- credentials ---------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        """Where the fake ``docker-credential-*`` helpers live (the helpers' PATH)."""
        return self.workdir / "bin"

    @property
    def helper_runs_file(self) -> Path:
        """One line per helper run: ``<helper> <host>``."""
        return self.workdir / "helper-runs.log"

    def helper_runs(self) -> list[str]:
        """The helper runs so far, as ``<helper> <host>`` lines."""
        try:
            return self.helper_runs_file.read_text().splitlines()
        except FileNotFoundError:
            return []

    def set_helper_answer(self, helper: str, host: str, user: str, secret: str) -> None:
        """What ``docker-credential-<helper> get`` prints for ``host`` from now on."""
        self._helper_answers.setdefault(helper, {})[host] = (user, secret)
        self._write_helper_state()

    def helper_answer(self, helper: str, host: str) -> tuple[str, str]:
        """(user, secret) that ``docker-credential-<helper> get`` prints for ``host`` now."""
        return self._helper_answers[helper][host]

    def _write_helper_state(self) -> None:
        state = self.workdir / "helpers.json"
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._helper_answers))
        tmp.replace(state)

    def _write_helpers(self) -> None:
        self._write_helper_state()
        names = {
            form.helper
            for p in self.profiles
            for form in (p.credential, p.helper_credential)
            if form is not None and form.helper
        }
        script = _HELPER_SCRIPT.format(
            python=sys.executable,
            state=str(self.workdir / "helpers.json"),
            runs=str(self.helper_runs_file),
        )
        for name in sorted(names):
            path = self.bin_dir / f"docker-credential-{name}"
            path.write_text(script)
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def config_document(
        self, key: str, form: CredentialForm | None = None, *, wrong: bool = False
    ) -> dict[str, Any]:
        """A ``config.json`` for registry ``key`` in its real form (``form``: the profile's).

        ``wrong`` puts in a wrong password (or refresh token) instead, still a
        secret of this registry for the audit. Helper forms set the helper's
        answer as a side effect.
        """
        zr = self.registries[key]
        form = form or zr.profile.credential
        if form.kind == "namespaces":
            auths = {}
            for namespace in zr.profile.namespaces:
                user = zr.identity(namespace)
                password = zr.new_secret("wrong") if wrong else zr.users[user]
                auths[f"{form.key}/{namespace}"] = {"auth": _basic(user, password)}
            return {"auths": auths}
        if form.kind == "auths":
            password = zr.new_secret("wrong") if wrong else zr.users[form.user]
            return {"auths": {form.key: {"auth": _basic(form.user, password)}}}
        if form.kind == "identitytoken":
            token = zr.new_secret("wrong") if wrong else zr.issue_refresh_token(SERVICE_PRINCIPAL)
            # az acr login: the all-zero GUID as the user, with no password, beside the token.
            entry = {"auth": _basic(form.user, ""), "identitytoken": token}
            return {"auths": {form.key: entry}}
        secret = self._helper_secret(zr, form, wrong=wrong)
        self.set_helper_answer(form.helper, form.key, form.user, secret)
        return {"credHelpers": {form.key: form.helper}}

    def _helper_secret(self, zr: ZooRegistry, form: CredentialForm, *, wrong: bool) -> str:
        if wrong:
            return zr.new_secret("wrong")
        if form.user == "<token>":
            return zr.issue_refresh_token(SERVICE_PRINCIPAL)
        return zr.users[form.user]

    def load_config(self, document: Mapping[str, Any]) -> ConfigFile:
        """Write ``document`` as a config.json in a directory of its own; load it as a user would.

        The helpers are found on a PATH holding only the zoo's ``bin``
        directory, and run with that environment alone.
        """
        self._configs += 1
        config_dir = self.workdir / f"docker-config-{self._configs}"
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "config.json").write_text(json.dumps(document))
        env = {
            "DOCKER_CONFIG": str(config_dir),
            "PATH": str(self.bin_dir),
            "HOME": str(self.workdir),
        }
        return load_with_env(env=env)

    # -- clients -------------------------------------------------------------

    def resolver(self) -> ZooResolver:
        """A resolver for the zoo's names (and nothing else)."""
        return ZooResolver(self.ports)

    def connector(self) -> aiohttp.TCPConnector:
        """A connector that reaches the zoo over https trusting only its CA."""
        if self.tls is None:
            raise RuntimeError("the zoo is not running")
        return aiohttp.TCPConnector(resolver=self.resolver(), ssl=self.tls.client)

    @contextlib.asynccontextmanager
    async def client(
        self, config: ConfigFile | None, *, adapter: str = "aiohttp", **params: Any
    ) -> AsyncIterator[tuple[Any, Any]]:
        """A middleware with ``config`` (and ``params``), and a session through it.

        ``adapter="httpx"`` gives an :class:`aociauth.httpx.RegistryAuth` and a
        :class:`HttpxSession` instead (the part of aiohttp's session the flows
        use), over an httpx transport that reaches the zoo's names, and only them.

        The middleware's token requests go through a session of ours
        (``StdTransportParams(session=...)``) with the zoo's resolver and CA.
        Without one, the middleware would make its own session, whose
        RealmGuardResolver refuses a realm name that resolves to loopback
        unless the registry's own URL names this machine; ``ghcr.io`` does not,
        so every zoo token request would be refused. The realm policy itself
        (``check_realm``) looks at names as text, never at what they resolve
        to: ``https://ghcr.io/token`` is a public name to it, and the policy
        decides exactly as it would on the Internet. With a caller's session
        the address check is the caller's, and the zoo's resolver knows only
        zoo names.
        """
        if adapter == "httpx":
            async with self._httpx_client(config, **params) as pair:
                yield pair
            return
        if adapter != "aiohttp":
            raise ValueError(f"no such adapter {adapter!r}: 'aiohttp' or 'httpx'")
        token_session = aiohttp.ClientSession(connector=self.connector())
        mw = new_std_transport(StdTransportParams(config=config, session=token_session, **params))
        session = aiohttp.ClientSession(middlewares=[mw], connector=self.connector())
        try:
            yield mw, session
        finally:
            await session.close()
            await mw.close()
            await token_session.close()

    @contextlib.asynccontextmanager
    async def _httpx_client(
        self, config: ConfigFile | None, **params: Any
    ) -> AsyncIterator[tuple[Any, HttpxSession]]:
        import httpx

        from aociauth.httpx import RegistryAuth

        if self.tls is None:
            raise RuntimeError("the zoo is not running")
        transport = _zoo_transport(self.ports, self.tls.client)
        token_client = httpx.AsyncClient(transport=transport)
        auth = RegistryAuth(StdTransportParams(config=config, **params), client=token_client)
        client = httpx.AsyncClient(
            auth=auth, transport=_zoo_transport(self.ports, self.tls.client), follow_redirects=True
        )
        try:
            yield auth, HttpxSession(client)
        finally:
            await client.aclose()
            await auth.aclose()
            await token_client.aclose()


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _zoo_transport(ports: Mapping[str, int], ssl_context: Any) -> httpx.AsyncBaseTransport:
    """An httpx transport that sends a zoo name's requests to its loopback server.

    The request keeps its URL and ``Host``; the connection goes to 127.0.0.1
    and the server's port, with the name as TLS server name (httpcore's
    ``sni_hostname``), so the zoo's certificates verify as the real ones would.
    A name the zoo does not serve is refused, as :class:`ZooResolver` refuses it.
    (Made here: httpx is imported only by those who use it.)
    """
    import httpx

    class ZooTransport(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self._ports = dict(ports)
            self._inner = httpx.AsyncHTTPTransport(verify=ssl_context)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            host = request.url.host
            port = self._ports.get(host.lower().rstrip("."))
            if port is None:
                raise httpx.ConnectError(f"{host} is not a zoo host", request=request)
            inner = httpx.Request(
                request.method,
                request.url.copy_with(host="127.0.0.1", port=port),
                headers=request.headers,
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": host},
            )
            return await self._inner.handle_async_request(inner)

        async def aclose(self) -> None:
            await self._inner.aclose()

    return ZooTransport()


class HttpxResponse:
    """An httpx response as the flows read an aiohttp one: ``status``, ``headers``, ``read()``."""

    def __init__(self, response: Any) -> None:
        from multidict import CIMultiDict, CIMultiDictProxy

        self._response = response
        self.status: int = response.status_code
        self.headers = CIMultiDictProxy(CIMultiDict(response.headers.multi_items()))

    async def read(self) -> bytes:
        """The body."""
        body: bytes = await self._response.aread()
        return body


class _HttpxCall:
    def __init__(self, client: Any, method: str, url: str, headers: Mapping[str, str] | None):
        self._client, self._method, self._url, self._headers = client, method, url, headers
        self._response: Any = None

    async def __aenter__(self) -> HttpxResponse:
        self._response = await self._client.request(
            self._method, self._url, headers=dict(self._headers or {})
        )
        return HttpxResponse(self._response)

    async def __aexit__(self, *exc: object) -> None:
        await self._response.aclose()


class HttpxSession:
    """The part of :class:`aiohttp.ClientSession` the zoo's flows use, over httpx."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> _HttpxCall:
        """``async with session.get(url) as resp``."""
        return _HttpxCall(self.client, "GET", url, headers)

    def post(self, url: str, *, headers: Mapping[str, str] | None = None) -> _HttpxCall:
        """``async with session.post(url) as resp``."""
        return _HttpxCall(self.client, "POST", url, headers)
