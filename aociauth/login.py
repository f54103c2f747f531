"""Logging in to a registry and out again: what ``aociauth login`` and ``logout`` do.

As ``docker login`` does it: the credentials are first checked against the
registry (``GET /v2/`` through the middleware, with them; a 401 or 403 once
they were used, or a token server refusing them, means refused), then stored
where the Docker configuration says: through the credential helper it names
for the registry (``credHelpers``, else ``credsStore``; the helper protocol's
``store`` verb), or else in the configuration file itself. ``logout`` removes
them from both (the ``erase`` verb).

The file is ``$DOCKER_CONFIG/config.json``, or ``~/.docker/config.json`` when
``DOCKER_CONFIG`` is unset (the Docker CLI's rule). Credentials go in docker's
own format, ``{"auths": {KEY: {"auth": base64(user:password)}}}``, so docker,
podman and crane read what is written; ``KEY`` is the registry's
``host[:port]``, and ``https://index.docker.io/v1/`` for Docker Hub. The file
is rewritten atomically (a temporary file in its directory, then
:func:`os.replace`) with mode 0600, keeping every other entry and every key
this module does not know.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import ClientRequest, ClientResponse
from aiohttp.client_middlewares import ClientMiddlewareType
from yarl import URL

from aociauth._reference import is_domain
from aociauth.config import (
    DOCKER_HUB_HOSTS,
    DOCKER_HUB_SERVER_URL,
    ConfigEntry,
    ConfigFile,
    _parse_json,
    _read_file,
)
from aociauth.errors import ConfigError, LoginRefusedError, OCIAuthError, TokenServerError
from aociauth.helpers import erase_credentials, exec_helper_with_env, store_credentials
from aociauth.middleware import StdTransportParams, new_std_transport

__all__ = [
    "DOCKER_HUB_API_HOST",
    "CredentialStore",
    "LoginTarget",
    "Verification",
    "credential_store",
    "docker_config_path",
    "login_target",
    "remove_credentials",
    "save_credentials",
    "verify_credentials",
]

#: The host Docker Hub's registry API is served on.
DOCKER_HUB_API_HOST = "registry-1.docker.io"


@dataclass(frozen=True)
class LoginTarget:
    """A registry as ``login`` and ``logout`` take it.

    ``key`` is where its credentials are stored (the ``auths`` key and the
    helper's server URL), ``host`` where its API is served (``host[:port]``).
    """

    key: str
    host: str


def login_target(server: str) -> LoginTarget:
    """The registry ``server`` names: ``host[:port]``, or a URL as docker login takes it.

    A scheme and a path are dropped (docker keeps only the host name); Docker
    Hub's names (``docker.io``, ``index.docker.io``, ``registry-1.docker.io``
    and ``https://index.docker.io/v1/``) give its ``https://index.docker.io/v1/``
    key. Raises :class:`ValueError` for anything that is not a host.
    """
    text = server.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    host = text.split("/", 1)[0].lower()
    if not is_domain(host):
        raise ValueError(f"invalid registry {server!r}: expected HOST or HOST:PORT")
    if host in DOCKER_HUB_HOSTS:
        return LoginTarget(DOCKER_HUB_SERVER_URL, DOCKER_HUB_API_HOST)
    return LoginTarget(host, host)


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    """The Docker CLI's configuration file: ``$DOCKER_CONFIG/config.json`` or ``~/.docker/...``.

    ``env`` None means ``os.environ``. Raises :class:`~aociauth.ConfigError`
    when neither ``DOCKER_CONFIG`` nor ``HOME`` is set.
    """
    env = os.environ if env is None else env
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".docker" / "config.json"
    raise ConfigError(
        "cannot tell where the Docker config is: neither DOCKER_CONFIG nor HOME is set"
    )


@dataclass(frozen=True)
class CredentialStore:
    """Where a registry's credentials are stored: a helper, or the config file.

    ``helper`` is the helper's name (without ``docker-credential-``), empty
    for the file; ``kind`` says which configuration key chose it.
    """

    path: Path
    key: str
    host: str
    helper: str = ""
    kind: Literal["credHelpers", "credsStore", "file"] = "file"

    def __str__(self) -> str:
        if self.helper:
            return f"docker-credential-{self.helper} ({self.kind} in {self.path})"
        return str(self.path)


def _names(target: LoginTarget) -> tuple[str, ...]:
    """The keys a lookup of ``target`` would use, most specific first."""
    if target.key == DOCKER_HUB_SERVER_URL:
        return (DOCKER_HUB_SERVER_URL, *sorted(DOCKER_HUB_HOSTS))
    return (target.key,)


def _read_document(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; empty when the file is missing or empty."""
    raw = _read_file(str(path))
    data = _parse_json(raw, str(path)) if raw else None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {path}: not a JSON object")
    return data


def _object(doc: Mapping[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = doc.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f'invalid config {path}: "{name}" is not a JSON object')
    return value


def credential_store(target: LoginTarget, env: Mapping[str, str] | None = None) -> CredentialStore:
    """Where ``target``'s credentials go, as the Docker CLI decides it.

    ``credHelpers`` for the registry, else ``credsStore``, else the file
    (:func:`docker_config_path`). Raises :class:`~aociauth.ConfigError` for a
    file that cannot be read or is not a valid configuration.
    """
    path = docker_config_path(env)
    doc = _read_document(path)
    helpers = _object(doc, "credHelpers", path)
    for name in _names(target):
        helper = helpers.get(name)
        if isinstance(helper, str) and helper:
            return CredentialStore(path, target.key, target.host, helper, "credHelpers")
    store = doc.get("credsStore")
    if store is not None and not isinstance(store, str):
        raise ConfigError(f'invalid config {path}: "credsStore" is not a string')
    if store:
        return CredentialStore(path, target.key, target.host, store, "credsStore")
    return CredentialStore(path, target.key, target.host)


# -- checking the credentials ----------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """How the registry took the credentials.

    ``scheme`` is ``"bearer"`` (the token server accepted them), ``"basic"``
    (the registry did), or ``"none"``: the registry asked for no
    authentication, so they were not checked.
    """

    scheme: Literal["basic", "bearer", "none"]


class _LastAuthorization:
    """An inner middleware noting the Authorization header each attempt was sent with."""

    def __init__(self) -> None:
        self.value = ""

    async def __call__(
        self, req: ClientRequest, handler: Callable[[ClientRequest], Awaitable[ClientResponse]]
    ) -> ClientResponse:
        self.value = req.headers.get("Authorization", "")
        return await handler(req)


async def verify_credentials(
    base_url: URL | str,
    target: LoginTarget,
    username: str,
    password: str,
    *,
    before: Sequence[ClientMiddlewareType] = (),
    after: Sequence[ClientMiddlewareType] = (),
) -> Verification:
    """Check ``username``/``password`` with ``GET /v2/`` on the registry at ``base_url``.

    The request goes through a middleware holding only these credentials, so
    the registry's own flow (Basic, or a token fetched with them) decides.
    ``before``/``after`` are middlewares put around it (the command line's
    progress report). Raises :class:`~aociauth.LoginRefusedError` when the
    registry or its token server refuses them, or when the realm policy kept
    them from the token server, and :class:`~aociauth.OCIAuthError` for any
    other failing answer.
    """
    url = URL(str(base_url)).with_path("/v2/")
    config = ConfigFile.from_dict(
        {"auths": {target.host: {"username": username, "password": password}}}
    )
    sent = _LastAuthorization()
    mw = new_std_transport(StdTransportParams(config=config))

    def refused(why: str) -> LoginRefusedError:
        return LoginRefusedError(
            f"{target.host} refused the credentials of {username!r}: {why}; nothing was stored",
            registry=target.host,
            step="login",
        )

    async with mw, aiohttp.ClientSession(middlewares=[*before, mw, *after, sent]) as session:
        try:
            async with session.get(url) as resp:
                await resp.read()
                status = resp.status
        except TokenServerError as exc:
            if exc.status in (401, 403):
                raise refused(f"the token server answered {exc.status}") from None
            raise
        downgraded = mw.stats.anonymous_realm_downgrades
    if downgraded:
        raise LoginRefusedError(
            f"{target.host}: its token server is not trusted with credentials by the realm "
            "policy, so they could not be checked; nothing was stored",
            registry=target.host,
            step="login",
        )
    if status in (401, 403):
        raise refused(f"GET /v2/ answered {status}")
    if status >= 400:
        raise OCIAuthError(
            f"{target.host}: GET /v2/ answered {status}; nothing was stored",
            registry=target.host,
            step="login",
        )
    scheme = sent.value.partition(" ")[0].lower()
    if scheme == "bearer":
        return Verification("bearer")
    if scheme == "basic":
        return Verification("basic")
    return Verification("none")


# -- storing and removing them -------------------------------------------------------


def _basic_auth(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _rewrite(path: Path, change: Callable[[dict[str, Any]], bool]) -> Path | None:
    """Apply ``change`` to the document in ``path`` and write it back atomically, mode 0600.

    A symbolic link is followed, as the Docker CLI does, so the file it
    points to is replaced, not the link. Returns the file written, or None
    when ``change`` changed nothing (nothing is written then). Blocking: run
    it in a thread from async code.
    """
    target = Path(os.path.realpath(path))
    doc = _read_document(target)
    if not change(doc):
        return None
    text = json.dumps(doc, indent="\t") + "\n"
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or type(exc).__name__}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ConfigError(f"cannot write {target}: {exc.strerror or type(exc).__name__}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target


def _same_registry(key: str, names: Iterable[str], hosts: Iterable[str]) -> bool:
    """Whether an ``auths`` key is one of ``names``, or a URL key for one of ``hosts``."""
    if key in names:
        return True
    if "://" not in key:
        return False
    host = key.split("://", 1)[1].split("/", 1)[0].lower()
    return host in hosts


async def save_credentials(
    store: CredentialStore, username: str, password: str, env: Mapping[str, str] | None = None
) -> None:
    """Store the credentials where ``store`` says.

    With a helper, its ``store`` verb, and any password the file still holds
    for the registry is taken out of it (the Docker CLI leaves no secret
    there either). Without one, the file's ``auths`` entry for the key is
    replaced by ``{"auth": base64(user:password)}``.
    """
    if store.helper:
        await store_credentials(store.helper, store.key, username, password, env=env)

        def drop_secrets(doc: dict[str, Any]) -> bool:
            auths = _object(doc, "auths", store.path)
            return auths.pop(store.key, None) is not None

        await asyncio.to_thread(_rewrite, store.path, drop_secrets)
        return

    def put(doc: dict[str, Any]) -> bool:
        auths = _object(doc, "auths", store.path)
        auths[store.key] = {"auth": _basic_auth(username, password)}
        doc["auths"] = auths
        return True

    await asyncio.to_thread(_rewrite, store.path, put)


async def remove_credentials(
    store: CredentialStore, env: Mapping[str, str] | None = None
) -> list[str]:
    """Remove the registry's credentials from its helper and from the file.

    The helper is asked (``get``) whether it holds any, and told to ``erase``
    them if so.
    In the file, every ``auths`` key a lookup would find for the registry
    goes: its key, URL keys for its host, and Docker Hub's other names;
    per-namespace keys (``host/team``) stay. Returns where credentials were
    removed from (empty: there were none).
    """
    removed: list[str] = []
    # Asked first: helpers differ in what erase says for a server they have nothing
    # for (docker-credential-pass 0.6 exits 1 with "... is not in the password store").
    if store.helper and await exec_helper_with_env(env)(store.helper, store.key) != ConfigEntry():
        await erase_credentials(store.helper, store.key, env=env)
        removed.append(f"docker-credential-{store.helper}")
    names = _names(LoginTarget(store.key, store.host))
    hosts = DOCKER_HUB_HOSTS if store.key == DOCKER_HUB_SERVER_URL else {store.host}

    def drop(doc: dict[str, Any]) -> bool:
        auths = _object(doc, "auths", store.path)
        gone = [key for key in auths if _same_registry(key, names, hosts)]
        for key in gone:
            del auths[key]
        return bool(gone)

    written = await asyncio.to_thread(_rewrite, store.path, drop)
    if written is not None:
        removed.append(str(written))
    return removed
