"""The command line: ``aociauth`` (also ``python -m aociauth``).

Subcommands:

* ``demo``: pull many manifests from a registry and token server started in
  this process on 127.0.0.1, through the middleware, and show what it cost
  (``--compare`` puts aociauth run with the Go original's policy beside it;
  ``--fleet N [--redis URL]`` runs N worker processes alone, then sharing
  tokens through Redis, and counts the token requests saved);
* ``get [REGISTRY]``: which credentials the Docker configuration gives a
  registry, and where they come from (secrets masked); without a registry,
  every registry that has credentials;
* ``token REPOSITORY``: run the token flow against a registry and describe the
  token obtained (printed only with ``--show-token``); exit 1 when the
  repository's tags/list fails or the grant is short of the request;
* ``fetch REFERENCE``: an authorised GET of a manifest, a curl that knows
  ``docker login``;
* ``login [REGISTRY]`` and ``logout [REGISTRY]``: check credentials with a
  registry and store them (a credential helper, or the Docker config file),
  or remove them, as ``docker login`` and ``docker logout`` do
  (:mod:`aociauth.login`).

Errors are one line on standard error (a traceback only with ``--debug``,
which also turns on debug logging of the ``aociauth`` logger). ``token``,
``fetch`` and ``login`` end within ``--timeout`` seconds, and name on stderr what they wait
for when a step takes more than :data:`NOTICE_AFTER` seconds. Exit codes:

===  ==========================================================================
0    success
1    the registry or token server refused or failed (authentication, 4xx/5xx);
     ``token``: tags/list failed or the token grants less than was asked
2    usage error (bad arguments, a malformed reference)
3    configuration error (unreadable or invalid config, a credential helper failed)
4    a registry or token server could not be reached, or ``--timeout`` ran out
5    an optional dependency is missing (the demo needs the ``demo`` extra)
70   internal error (a bug: please report it, with the ``--debug`` traceback)
130  interrupted (Ctrl-C)
===  ==========================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO, TypeVar

import aiohttp
import anyio
from aiohttp import ClientRequest, ClientResponse
from yarl import URL

from aociauth._addresses import on_this_machine
from aociauth._capped import collect_capped
from aociauth._redact import mask, redact_headers, redact_text, redact_url
from aociauth._reference import NAME_MAX, is_digest, is_domain, is_name_component, is_tag
from aociauth.challenge import parse_challenges, select_challenge
from aociauth.config import DOCKER_HUB_HOSTS, ConfigFile, Resolution, StoredCredential, load
from aociauth.context import with_scope
from aociauth.errors import ConfigError, CredentialLookupError, OCIAuthError, TokenServerError
from aociauth.login import (
    LoginTarget,
    Verification,
    credential_store,
    login_target,
    remove_credentials,
    save_credentials,
    verify_credentials,
)
from aociauth.middleware import AuthMiddleware, StdTransportParams, new_std_transport
from aociauth.scope import Scope, parse_scope
from aociauth.tokens import granted_scope

__all__ = [
    "DEFAULT_TIMEOUT",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_MISSING_DEPENDENCY",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "MANIFEST_MEDIA_TYPES",
    "CLIError",
    "ImageReference",
    "build_parser",
    "main",
    "parse_reference",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_UNREACHABLE = 4
EXIT_MISSING_DEPENDENCY = 5
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

#: What ``fetch`` accepts: OCI index and manifest, Docker manifest list and v2
#: manifest. distribution answers an OCI manifest with 404 unless its media
#: type is listed, even for ``*/*``.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)

#: Docker Hub: the name in references, and the host its registry API is served on.
DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"

#: Largest response body ``fetch`` reads (the OCI spec lets registries refuse
#: manifests over 4 MiB; this leaves room).
MAX_BODY = 16 * 1024 * 1024
_ERROR_BODY = 64 * 1024

#: Seconds ``token``, ``fetch`` and ``login``'s check may take in all (``--timeout``): a frozen
#: registry or token server ends the command instead of holding it for aiohttp's
#: 300 s or three 30 s token attempts.
DEFAULT_TIMEOUT = 30.0
#: Seconds a phase may last before the command says on stderr what it waits for.
NOTICE_AFTER = 2.0

_T = TypeVar("_T")

log = logging.getLogger("aociauth")


class CLIError(Exception):
    """A failure the command line reports as one line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# -- references ------------------------------------------------------------------


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference: where the registry is, the repository, and tag or digest.

    ``registry`` is the host the registry API is served on (``host[:port]``;
    Docker Hub's ``registry-1.docker.io``), ``scheme`` ``http`` or ``https``.
    """

    scheme: str
    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def base_url(self) -> URL:
        """The registry's origin, ``scheme://registry``."""
        return URL(f"{self.scheme}://{self.registry}")

    @property
    def reference(self) -> str:
        """What a manifest is fetched by: the digest if there is one, else the tag (or latest)."""
        return self.digest or self.tag or "latest"

    def manifest_url(self) -> URL:
        """``/v2/NAME/manifests/REFERENCE`` on the registry."""
        return self.base_url.with_path(f"/v2/{self.repository}/manifests/{self.reference}")

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def is_loopback(host: str) -> bool:
    """Whether the registry ``host`` (``name[:port]``, ``[ipv6][:port]``) is this machine.

    The realm guard's rule (:func:`aociauth._addresses.on_this_machine`):
    ``localhost`` and the names under it, and loopback addresses in any
    spelling a resolver reads.
    """
    name = host
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    return on_this_machine(name)


def parse_reference(text: str, *, insecure: bool = False, allow_tag: bool = True) -> ImageReference:
    """Parse ``[REGISTRY/]NAME[:TAG][@DIGEST]`` as docker does.

    The first path component is a registry when it holds a ``.`` or a ``:``
    or is ``localhost``; otherwise the image is on Docker Hub (``library/``
    added to one-component names). The scheme is ``http`` for a loopback
    registry (as docker's default insecure registries) or with ``insecure``,
    ``https`` otherwise. Raises :class:`CLIError` (usage) when malformed.
    """

    def bad(why: str) -> NoReturn:
        raise CLIError(f"invalid reference {text!r}: {why}", EXIT_USAGE)

    rest, _, digest = text.partition("@")
    if digest and not is_digest(digest):
        bad("malformed digest")
    tag = ""
    colon, slash = rest.rfind(":"), rest.rfind("/")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not is_tag(tag):
            bad("malformed tag")
    if (tag or digest) and not allow_tag:
        bad("give a repository without a tag or digest")
    first, sep, path = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        domain = first
        if not is_domain(domain):
            bad("malformed registry host")
    else:
        domain, path = DOCKER_HUB, rest
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not path or not all(is_name_component(c) for c in path.split("/")):
        bad("a repository name is lowercase letters, digits and separators (. _ __ -)")
    if len(path) > NAME_MAX:
        bad(f"repository name longer than {NAME_MAX} characters")
    registry = DOCKER_HUB_API_HOST if domain == DOCKER_HUB else domain
    scheme = "http" if insecure or is_loopback(registry) else "https"
    return ImageReference(scheme, registry, path, tag, digest)


def _host_of_get_argument(text: str) -> str:
    """A registry as ``get`` takes it: a host, or a URL key (``https://index.docker.io/v1/``)."""
    if "//" in text:
        text = text.split("//", 1)[1]
    host = text.partition("/")[0]
    if not host or not is_domain(host):
        raise CLIError(f"invalid registry {text!r}: expected HOST or HOST:PORT", EXIT_USAGE)
    return host


# -- output helpers --------------------------------------------------------------


def _print_fields(rows: Sequence[tuple[str, str]], out: TextIO) -> None:
    width = max(len(k) for k, _ in rows) + 1
    for key, value in rows:
        print(f"{key + ':':<{width}} {value}", file=out)


def _dump_json(data: Any, out: TextIO) -> None:
    json.dump(data, out, indent=2, sort_keys=False)
    out.write("\n")


async def _read_capped(resp: ClientResponse, cap: int) -> bytes:
    def too_big() -> CLIError:
        return CLIError(f"{redact_url(resp.url)}: body larger than {cap} bytes", EXIT_FAILED)

    chunks = resp.content.iter_chunked(64 * 1024)
    return await collect_capped(chunks, cap, resp.content_length, too_big)


async def _registry_error(resp: ClientResponse, what: str) -> CLIError:
    """One line for a registry's refusal: status, and its OCI error codes and messages.

    A 403 DENIED the middleware made of a token asked for anonymously, for want
    of credentials, ends with how to log in.
    """
    detail = ""
    hint = ""
    try:
        body = await resp.content.read(_ERROR_BODY)
        data = json.loads(body)
        errors = data.get("errors") if isinstance(data, dict) else None
        if isinstance(errors, list):
            errors = [e for e in errors if isinstance(e, dict)]
            parts = [f"{e.get('code', '?')}: {e.get('message', '')}".strip() for e in errors]
            detail = "; ".join(parts)
            hint = next(filter(None, (_denied_hint(e) for e in errors)), "")
    except (ValueError, aiohttp.ClientError, asyncio.TimeoutError):
        pass
    line = f"{what}: {resp.status} {resp.reason or ''}".rstrip()
    if detail:
        line += f" ({redact_text(detail)[:_SHOWN_DETAIL]})"
    return CLIError(line + hint, EXIT_FAILED)


#: The most of a registry's error messages an error line shows.
_SHOWN_DETAIL = 1000


def _denied_hint(error: dict[str, Any]) -> str:
    """How to log in, for a DENIED whose detail says no credentials were found."""
    detail = error.get("detail")
    if error.get("code") != "DENIED" or not isinstance(detail, dict):
        return ""
    registry = detail.get("registry")
    if detail.get("anonymous") is not True or detail.get("credentials_found") is not False:
        return ""
    return _login_hint(registry) if isinstance(registry, str) and registry else ""


def _login_hint(registry: str) -> str:
    """``; to log in, run ...``: the newcomer's fix for a registry that wants credentials."""
    if not is_domain(registry):
        return ""  # not a host[:port] to put in a command line
    name = "" if registry in DOCKER_HUB_HOSTS else f" {registry}"
    return f"; to log in, run `aociauth login{name}` or `docker login{name}`"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- the middleware, as the commands use it --------------------------------------


def _middleware(config: ConfigFile) -> AuthMiddleware:
    return new_std_transport(StdTransportParams(config=config))


def _load_config() -> ConfigFile:
    return load()


class _Progress:
    """What a command is waiting for now, as the command line can tell from outside the middleware.

    The middleware reports no phases, so :class:`_Entering` (before it) and
    :class:`_Sending` (after it) infer them: time between a request entering the
    middleware and leaving it, or after a Bearer challenge, is spent on
    credentials or the token server; time after it left is the registry's.
    """

    def __init__(self) -> None:
        self.phase = "the command to start"
        self.since = time.monotonic()
        self.reported = False
        #: The token endpoint each registry's last Bearer challenge named.
        self.realms: dict[str, str] = {}

    def enter(self, phase: str) -> None:
        """Note that the command now waits for ``phase`` (a noun phrase)."""
        if phase != self.phase:
            self.phase = phase
            self.since = time.monotonic()
            self.reported = False

    def authorising(self, url: URL) -> None:
        """The middleware is working on a request to ``url``: a token, or credentials."""
        host = url.host_port_subcomponent or ""
        realm = self.realms.get(host)
        if realm is not None:
            self.enter(f"token server {realm} for registry {host}")
        else:
            self.enter(f"credentials for registry {host} (configuration or credential helper)")


class _Entering:
    """An outer middleware (before the auth middleware): a request starts being authorised."""

    def __init__(self, progress: _Progress) -> None:
        self.progress = progress

    async def __call__(
        self, req: ClientRequest, handler: Callable[[ClientRequest], Awaitable[ClientResponse]]
    ) -> ClientResponse:
        self.progress.authorising(req.url)
        return await handler(req)


class _Sending:
    """An inner middleware (after the auth middleware): a request goes to the registry.

    It sees each attempt as sent, so it notes the Authorization header the last
    one carried (what the registry accepted or refused), and the token endpoint
    a Bearer challenge names, which is where the middleware goes next.
    """

    def __init__(self, progress: _Progress) -> None:
        self.progress = progress
        self.value: str | None = None

    async def __call__(
        self, req: ClientRequest, handler: Callable[[ClientRequest], Awaitable[ClientResponse]]
    ) -> ClientResponse:
        self.value = req.headers.get("Authorization")
        host = req.url.host_port_subcomponent or ""
        what = f"{req.method} {req.url.path}"
        self.progress.enter(f"registry {host} to answer {what}")
        resp = await handler(req)
        if resp.status == 401:
            chosen = select_challenge(parse_challenges(resp.headers.getall("WWW-Authenticate", ())))
            if chosen is not None and chosen.scheme == "bearer" and chosen.realm:
                self.progress.realms[host] = redact_url(chosen.realm)
            self.progress.authorising(req.url)
        else:
            self.progress.enter(f"registry {host} to send the body of {what}")
        return resp


async def _report_waits(progress: _Progress, after: float, err: TextIO) -> None:
    """Say on ``err`` what the command waits for, once a phase has lasted ``after`` seconds."""
    while True:
        await asyncio.sleep(min(0.25, after))
        waited = time.monotonic() - progress.since
        if not progress.reported and waited >= after:
            progress.reported = True
            print(f"aociauth: waiting for {progress.phase} ({waited:.0f} s)", file=err, flush=True)


async def _bounded(limit: float, progress: _Progress, work: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``work`` for at most ``limit`` seconds, saying what it waits for when it is slow.

    Past the deadline, a :class:`CLIError` (exit 4) names what was being waited for.
    """
    watchdog = asyncio.ensure_future(_report_waits(progress, NOTICE_AFTER, sys.stderr))
    try:
        with anyio.move_on_after(limit) as scope:
            return await work()
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
    assert scope.cancelled_caught
    raise CLIError(
        f"timed out after {limit:g} s waiting for {progress.phase} (--timeout changes the limit)",
        EXIT_UNREACHABLE,
    )


# -- get ---------------------------------------------------------------------------


def _entry_rows(res: Resolution, show: bool) -> list[tuple[str, str]]:
    entry = res.entry

    def secret(value: str) -> str:
        return value if show and value else mask(value)

    return [
        ("username", entry.username or "<empty>"),
        ("password", secret(entry.password)),
        ("refresh token", secret(entry.refresh_token)),
        ("access token", secret(entry.access_token)),
    ]


def _where(res: Resolution) -> str:
    """Where in its source an answer is: the key, or the helper."""
    if res.kind == "credHelpers":
        return f"credHelpers[{res.key}]: docker-credential-{res.helper}"
    if res.kind == "credsStore":
        return f"credsStore: docker-credential-{res.helper}"
    return f"auths[{res.key}]"


def _stored_json(place: StoredCredential, show: bool) -> dict[str, Any]:
    def secret(value: str) -> str:
        return value if show and value else mask(value)

    found, instead = place.found, place.used_instead
    return {
        "registry": place.registry,
        "namespace": place.namespace,
        "kind": found.kind,
        "source": found.source,
        "key": found.key,
        "helper": found.helper,
        "username": found.entry.username,
        "password": secret(found.entry.password),
        "refresh_token": secret(found.entry.refresh_token),
        "access_token": secret(found.entry.access_token),
        "used": place.problem is None and instead is None,
        "problem": place.problem,
        "used_instead": None
        if instead is None
        else {
            "kind": instead.kind,
            "source": instead.source,
            "key": instead.key,
            "helper": instead.helper,
        },
    }


def _stored_row(place: StoredCredential, show: bool) -> list[str]:
    entry = place.found.entry
    shown = [
        f"{name}={value if show else mask(value)}"
        for name, value in (
            ("password", entry.password),
            ("refresh_token", entry.refresh_token),
            ("access_token", entry.access_token),
        )
        if value
    ]
    if place.problem is not None:
        status = f"unusable: {_one_line(place.problem)}"
    elif place.used_instead is not None:
        status = f"shadowed by {place.used_instead.source}, {_where(place.used_instead)}"
    else:
        status = "used"
    registry = place.registry + (f"/{place.namespace}" if place.namespace else "")
    return [
        registry,
        place.found.source or "-",
        _where(place.found),
        entry.username or "-",
        " ".join(shown) or "-",
        status,
    ]


async def _cmd_get_all(args: argparse.Namespace, out: TextIO) -> int:
    """``aociauth get``: every place that holds credentials, in the order lookups use them."""
    config = _load_config()
    listing = await config.stored_credentials()
    if args.json:
        _dump_json(
            {
                "sources_read": list(config.sources),
                "credentials": [_stored_json(p, args.show_secrets) for p in listing],
            },
            out,
        )
        return EXIT_OK
    header = ["REGISTRY", "SOURCE", "WHERE", "USERNAME", "SECRETS", "STATUS"]
    rows = [header] + [_stored_row(p, args.show_secrets) for p in listing]
    # Keys, names and paths come from files: escape anything a terminal would act on.
    rows = [[c if c.isprintable() else repr(c)[1:-1] for c in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]), file=out)
    if not listing:
        print("no credentials found", file=out)
    print(f"sources read: {', '.join(config.sources) or 'none'}", file=out)
    return EXIT_OK


async def cmd_get(args: argparse.Namespace, out: TextIO) -> int:
    """``aociauth get [REGISTRY]``: the credentials the configuration resolves, and from where.

    Without REGISTRY: every registry that has credentials, and their sources.
    """
    if args.registry is None:
        if args.repository:
            raise CLIError("--repository needs a REGISTRY", EXIT_USAGE)
        return await _cmd_get_all(args, out)
    host = _host_of_get_argument(args.registry)
    config = _load_config()
    res = await config.resolve(host, args.repository or "")
    entry = res.entry
    if args.json:

        def secret(value: str) -> str:
            return value if args.show_secrets and value else mask(value)

        _dump_json(
            {
                "registry": host,
                "repository": args.repository or "",
                "kind": res.kind,
                "source": res.source,
                "key": res.key,
                "helper": res.helper,
                "username": entry.username,
                "password": secret(entry.password),
                "refresh_token": secret(entry.refresh_token),
                "access_token": secret(entry.access_token),
                "sources_read": list(config.sources),
            },
            out,
        )
        return EXIT_OK
    kind = {
        "auths": "auths entry",
        "credHelpers": "credential helper (credHelpers)",
        "credsStore": "credential store (credsStore)",
        "none": "none: no credentials for this registry",
    }[res.kind]
    rows = [("registry", host)]
    if args.repository:
        rows.append(("repository", args.repository))
    rows += [
        ("found", kind),
        ("source", res.source or "-"),
        ("key", res.key or "-"),
        ("helper", f"docker-credential-{res.helper}" if res.helper else "-"),
    ]
    if res.kind != "none":
        rows += _entry_rows(res, args.show_secrets)
    rows.append(("sources read", ", ".join(config.sources) or "none"))
    _print_fields(rows, out)
    return EXIT_OK


# -- token ---------------------------------------------------------------------------


_GRANT_KINDS = {
    "get_basic": "GET with Basic credentials",
    "get_anonymous": "GET, anonymous",
    "post_refresh": "POST, OAuth2 refresh_token grant",
}


def _token_problems(wanted: Scope, granted: Scope | None, tags_error: str) -> list[str]:
    """Why ``token``'s check failed: the repository's tags/list, or a grant short of the request.

    A token whose grant cannot be read (not a JWT with an ``access`` claim)
    is judged by tags/list alone.
    """
    problems = [tags_error] if tags_error else []
    if granted is not None and not granted.contains(wanted):
        missing = [str(item) for item in wanted if not granted.holds(item)]
        problems.append(
            f"the token server granted {str(granted.canonical()) or 'nothing'}, "
            f"not {' '.join(missing)}"
        )
    return problems


async def cmd_token(args: argparse.Namespace, out: TextIO) -> int:
    """``aociauth token REPOSITORY``: run the flow against a registry and describe the token.

    Exits 1 (after the description) when the repository's tags/list fails or
    the token grants less than was asked.
    """
    ref = parse_reference(args.repository, insecure=args.insecure, allow_tag=False)
    actions = "pull,push" if args.push else "pull"
    wanted = parse_scope(f"repository:{ref.repository}:{actions}")
    for extra in args.scope or ():
        wanted = wanted.union(parse_scope(extra))
    config = _load_config()
    progress = _Progress()
    sending = _Sending(progress)
    base = ref.base_url
    tags_url = base.with_path(f"/v2/{ref.repository}/tags/list")
    async with (
        _middleware(config) as mw,
        aiohttp.ClientSession(middlewares=[_Entering(progress), mw, sending]) as session,
    ):

        async def flow() -> tuple[int, int, str]:
            with with_scope(wanted):
                async with session.get(base.with_path("/v2/")) as resp:
                    if resp.status >= 400 and resp.status != 404:
                        raise await _registry_error(resp, f"GET {base}/v2/")
                    await resp.read()
                challenge = resp.status
                async with session.get(tags_url) as resp:
                    if resp.status in (401, 403):
                        raise await _registry_error(resp, f"GET {redact_url(tags_url)}")
                    tags_error = ""
                    if resp.status >= 300:
                        failed = await _registry_error(resp, f"GET {redact_url(tags_url)}")
                        tags_error = failed.message
                    await resp.read()
                return challenge, resp.status, tags_error

        challenge, tags_status, tags_error = await _bounded(args.timeout, progress, flow)
        stats = mw.stats
        # What the middleware holds: the token for the wanted scope, else the one it sent
        # (a token server may grant less than was asked).
        tok = mw.cached_token(base, wanted) or mw.cached_token(base)
        now = asyncio.get_running_loop().time()
    scheme = (sending.value or "").partition(" ")[0].lower()
    if tok is None or scheme != "bearer":
        how = "Basic credentials" if scheme == "basic" else "no authentication"
        raise CLIError(
            f"{ref.registry} uses {how}: there is no bearer token (GET /v2/ answered {challenge})",
            EXIT_FAILED,
        )
    kinds = [k for k, n in stats.token_requests.items() if n]
    grant = (
        ", ".join(_GRANT_KINDS.get(k, k) for k in kinds)
        if kinds
        else "none: an access token from the configuration (registrytoken)"
    )
    granted = granted_scope(tok.value)
    problems = _token_problems(wanted, granted, tags_error)
    expires = tok.expires_at - now
    shown_token = tok.value if args.show_token else mask(tok.value)
    cached = "*" if tok.scope.is_unlimited() else str(tok.scope.canonical())
    if args.json:
        _dump_json(
            {
                "registry": ref.registry,
                "repository": ref.repository,
                "scope_requested": str(wanted),
                "scope_cached": cached,
                "scope_granted": None if granted is None else str(granted.canonical()),
                "expires_in": round(expires) if math.isfinite(expires) else None,
                "grant": kinds,
                "token_requests": stats.total_token_requests,
                "responses_401": stats.responses_401,
                "tags_status": tags_status,
                "token": shown_token,
                "ok": not problems,
                "problems": problems,
            },
            out,
        )
    else:
        if granted is None:
            granted_text = "unknown (not a JWT with an access claim)"
        else:
            granted_text = str(granted.canonical()) or "nothing"
        _print_fields(
            [
                ("registry", ref.registry),
                ("repository", ref.repository),
                ("scope requested", str(wanted)),
                ("scope cached", cached),
                ("scope granted", granted_text),
                ("expires in", f"{expires:.0f} s" if math.isfinite(expires) else "never"),
                ("grant", grant),
                (
                    "round trips",
                    f"{stats.responses_401} 401, {stats.total_token_requests} token request(s)",
                ),
                ("tags/list", str(tags_status)),
                ("token", shown_token if args.show_token else "<set> (--show-token prints it)"),
            ],
            out,
        )
    if problems:
        out.flush()
        raise CLIError("; ".join(problems), EXIT_FAILED)
    return EXIT_OK


# -- fetch ---------------------------------------------------------------------------


def _fetch_target(text: str, insecure: bool) -> URL:
    if "://" in text:
        url = URL(text)
        if url.scheme not in ("http", "https") or not url.host:
            raise CLIError(f"invalid URL {redact_url(text)!r}: expected http(s)://HOST/...", 2)
        return url
    return parse_reference(text, insecure=insecure).manifest_url()


async def cmd_fetch(args: argparse.Namespace, out: TextIO) -> int:
    """``aociauth fetch REFERENCE``: an authorised GET of a manifest."""
    url = _fetch_target(args.reference, args.insecure)
    config = _load_config()
    headers = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
    progress = _Progress()
    async with (
        _middleware(config) as mw,
        aiohttp.ClientSession(middlewares=[_Entering(progress), mw, _Sending(progress)]) as session,
    ):

        async def get() -> tuple[ClientResponse, bytes]:
            async with session.get(url, headers=headers) as resp:
                if resp.status >= 400:
                    raise await _registry_error(resp, f"GET {redact_url(url)}")
                return resp, await _read_capped(resp, MAX_BODY)

        resp, body = await _bounded(args.timeout, progress, get)
    if args.headers:
        version = resp.version or aiohttp.HttpVersion11
        status = f"HTTP/{version.major}.{version.minor} {resp.status} {resp.reason or ''}"
        print(status.rstrip(), file=out)
        for key, value in redact_headers(list(resp.headers.items())):
            print(f"{key}: {value}", file=out)
        return EXIT_OK
    if args.raw:
        out.flush()
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return EXIT_OK
    try:
        _dump_json(json.loads(body), out)
    except (ValueError, UnicodeDecodeError):
        out.write(body.decode("utf-8", "replace"))
    return EXIT_OK


# -- login and logout ----------------------------------------------------------------

#: Most bytes of a password read from standard input.
_MAX_PASSWORD = 64 * 1024


def _login_target(text: str) -> LoginTarget:
    try:
        return login_target(text)
    except ValueError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None


def _ask_credentials(args: argparse.Namespace) -> tuple[str, str]:
    """The username and password: ``--password-stdin`` or prompts, never an argument."""
    username = args.username or ""
    if args.password_stdin:
        if not username:
            raise CLIError("--password-stdin needs --username", EXIT_USAGE)
        raw = sys.stdin.buffer.read(_MAX_PASSWORD + 1)
        if len(raw) > _MAX_PASSWORD:
            raise CLIError(f"the password on stdin is longer than {_MAX_PASSWORD} bytes", 2)
        # As docker login: one trailing newline (echo, a here-string) is not part of it.
        password = raw.decode("utf-8", "surrogateescape").removesuffix("\n").removesuffix("\r")
    else:
        if not sys.stdin.isatty():
            raise CLIError(
                "no terminal to ask for the password on: give it with --password-stdin",
                EXIT_USAGE,
            )
        if not username:
            username = input("Username: ").strip()
        password = getpass.getpass("Password: ")
    if not username:
        raise CLIError("a username is needed", EXIT_USAGE)
    if not password:
        raise CLIError("a password is needed", EXIT_USAGE)
    return username, password


def cmd_login(args: argparse.Namespace, out: TextIO) -> int:
    """``aociauth login [REGISTRY]``: check credentials with the registry, then store them."""
    target = _login_target(args.registry)
    store = credential_store(target)
    username, password = _ask_credentials(args)
    plain = args.insecure or is_loopback(target.host)
    base = URL(f"{'http' if plain else 'https'}://{target.host}")

    async def run() -> Verification:
        progress = _Progress()

        async def check() -> Verification:
            return await verify_credentials(
                base,
                target,
                username,
                password,
                before=[_Entering(progress)],
                after=[_Sending(progress)],
            )

        verified = await _bounded(args.timeout, progress, check)
        await save_credentials(store, username, password)
        return verified

    verified = asyncio.run(run())
    if verified.scheme == "none":
        print(
            f"aociauth: {target.host} asked for no credentials, so they were not checked",
            file=sys.stderr,
        )
    print(f"Login Succeeded: {username} at {target.key}, stored in {store}", file=out)
    return EXIT_OK


def cmd_logout(args: argparse.Namespace, out: TextIO) -> int:
    """``aociauth logout [REGISTRY]``: remove the stored credentials."""
    target = _login_target(args.registry)
    store = credential_store(target)
    removed = asyncio.run(remove_credentials(store))
    if removed:
        print(f"Removed the credentials for {target.key} from {', '.join(removed)}", file=out)
    else:
        print(f"Not logged in to {target.key}", file=out)
    return EXIT_OK


# -- demo ----------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """``aociauth demo``: the embedded registry, a concurrent pull, and what it cost."""
    try:
        import cryptography  # noqa: F401  (the token server signs with it)
    except ImportError:
        raise CLIError(
            "the demo needs the 'demo' extra (cryptography, rich): "
            "pip install 'aociauth[demo]' (from a clone: pip install -e '.[demo]')",
            EXIT_MISSING_DEPENDENCY,
        ) from None
    from aociauth import demo

    if args.repos < 1 or args.concurrency < 1 or args.latency_ms < 0:
        raise CLIError("--repos and --concurrency must be at least 1, --latency-ms not negative", 2)
    if args.fleet is not None or args.redis is not None:
        if args.trace:
            raise CLIError("--trace and --fleet do not go together", 2)
        return _demo_fleet(args, out)
    options = demo.DemoOptions(
        repos=args.repos,
        concurrency=args.concurrency,
        latency_ms=args.latency_ms,
        compare=args.compare,
    )
    if not args.trace:
        return demo.main(options, out=out, as_json=args.json)
    if args.json:
        raise CLIError("--trace prints a tree of spans, not JSON: use one or the other", 2)
    from aociauth._demo_trace import SpanRecorder, render_tree

    try:
        recorder = SpanRecorder()
    except ImportError:
        raise CLIError(
            "--trace needs the OpenTelemetry SDK: pip install 'aociauth[otel]' opentelemetry-sdk",
            EXIT_MISSING_DEPENDENCY,
        ) from None
    with recorder.span("aociauth demo"):
        code = demo.main(options, out=out)
    print(file=out)
    render_tree(recorder.spans(), out)
    return code


def _demo_fleet(args: argparse.Namespace, out: TextIO) -> int:
    """``aociauth demo --fleet N [--redis URL]``: N worker processes, alone and sharing tokens."""
    if args.fleet is None or args.fleet < 1:
        raise CLIError("--fleet must be at least 1 (and --redis needs --fleet)", 2)
    if args.compare:
        raise CLIError("--compare and --fleet do not go together", 2)
    try:
        import redis  # noqa: F401  (the shared cache's client)
    except ImportError:
        raise CLIError(
            "demo --fleet needs the 'redis' extra: pip install 'aociauth[redis]'",
            EXIT_MISSING_DEPENDENCY,
        ) from None
    from aociauth import fleet_demo

    options = fleet_demo.FleetOptions(
        processes=args.fleet,
        repos=args.repos,
        concurrency=args.concurrency,
        latency_ms=args.latency_ms,
        redis_url=args.redis,
    )
    return fleet_demo.main(options, out=out, as_json=args.json)


# -- the parser ----------------------------------------------------------------------


def _seconds(text: str) -> float:
    """A ``--timeout`` value: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _add_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=(
            f"give up after this many seconds in all, exit code 4 (default {DEFAULT_TIMEOUT:g}); "
            f"what is awaited is said on stderr after {NOTICE_AFTER:g} s"
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``aociauth`` and its subcommands."""
    from aociauth import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show debug logs of the aociauth logger, and a traceback on error",
    )
    parser = argparse.ArgumentParser(
        prog="aociauth",
        description="Docker/OCI registry authentication for aiohttp, from the command line.",
        epilog=(
            "exit codes: 0 ok, 1 refused or failed by the registry or token server (token: "
            "repository missing or grant short of the request), 2 usage, "
            "3 configuration or credential helper error, 4 unreachable or timed out, "
            "5 optional dependency missing, 70 internal error, 130 interrupted"
        ),
    )
    parser.add_argument("--version", action="version", version=f"aociauth {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False,
        help="show debug logs of the aociauth logger, and a traceback on error",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="pull many manifests from an in-process registry and show the round trips",
        description=(
            "Start a registry (bearer tokens) and a token server in this process on "
            "127.0.0.1, seed repositories, pull each one's manifest and config blob "
            "concurrently through the middleware, and print what it took. No network "
            "beyond loopback, no Docker."
        ),
    )
    p.add_argument(
        "--repos", type=int, default=200, help="repositories to seed and pull (default 200)"
    )
    p.add_argument(
        "--concurrency", type=int, default=32, help="pulls in flight at once (default 32)"
    )
    p.add_argument(
        "--latency-ms",
        type=float,
        default=20.0,
        help="milliseconds the token server takes per request (default 20)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="also pull with aociauth run with the Go original's policy, and show both",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument(
        "--trace",
        action="store_true",
        help="also print the OpenTelemetry spans of the pull as a tree (needs opentelemetry-sdk)",
    )
    p.add_argument(
        "--fleet",
        type=int,
        metavar="N",
        help=(
            "run N worker processes pulling the same images, alone and then sharing tokens "
            "through Redis, and show the token requests saved"
        ),
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        help=(
            "with --fleet: the Redis to share through (default: a redis-server started "
            "for the demo when installed)"
        ),
    )
    p.set_defaults(run=cmd_demo, is_async=False)

    p = sub.add_parser(
        "get",
        parents=[common],
        help="show which credentials the Docker configuration gives a registry",
        description=(
            "Resolve the credentials for REGISTRY through the configuration chain "
            "(DOCKER_AUTH_CONFIG; REGISTRY_AUTH_FILE or podman's auth.json; "
            "~/.config/containers/auth.json; DOCKER_CONFIG/config.json or "
            "~/.docker/config.json; ~/.dockercfg) and say where they came from; without "
            "REGISTRY, list every registry that has credentials. Secrets are masked unless "
            "--show-secrets is given. Credential helpers are run."
        ),
    )
    p.add_argument(
        "registry",
        metavar="REGISTRY",
        nargs="?",
        help="host[:port], e.g. ghcr.io or docker.io; without it, every registry that has"
        " credentials is listed, with where they come from, in the order lookups use them",
    )
    p.add_argument(
        "--repository",
        metavar="NAME",
        help="a repository, so that per-namespace keys (host/namespace) are considered",
    )
    p.add_argument(
        "--show-secrets", action="store_true", help="print passwords and tokens in clear"
    )
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(run=cmd_get, is_async=True)

    p = sub.add_parser(
        "token",
        parents=[common],
        help="obtain a token for a repository and describe it",
        description=(
            "Run the real flow against the registry: GET /v2/, then the repository's "
            "tags/list, through the middleware, asking for pull (and push with --push) on "
            "REPOSITORY plus any --scope. Prints the scope asked and granted, the expiry "
            "and the kind of grant; the token itself only with --show-token."
        ),
    )
    p.add_argument("repository", metavar="REPOSITORY", help="e.g. 127.0.0.1:5000/team/app")
    p.add_argument("--push", action="store_true", help="ask for push as well as pull")
    p.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help="an extra scope to ask for, e.g. registry:catalog:* (repeatable)",
    )
    p.add_argument("--show-token", action="store_true", help="print the token in clear")
    p.add_argument("--insecure", action="store_true", help="use plain http (default for loopback)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    _add_timeout(p)
    p.set_defaults(run=cmd_token, is_async=True)

    p = sub.add_parser(
        "fetch",
        parents=[common],
        help="GET a manifest with the user's credentials and print it",
        description=(
            "An authorised GET of a manifest, accepting OCI index and manifest and Docker "
            "manifest list and v2 media types. REFERENCE is REGISTRY/NAME[:TAG][@DIGEST] "
            "or a URL. Plain http is used for loopback registries (and with --insecure), "
            "https otherwise."
        ),
    )
    p.add_argument(
        "reference",
        metavar="REFERENCE",
        help="e.g. 127.0.0.1:5000/team/app:v1, ...@sha256:..., or http(s)://HOST/v2/...",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument("--headers", action="store_true", help="print the status and headers only")
    how.add_argument("--raw", action="store_true", help="print the body as received")
    p.add_argument("--insecure", action="store_true", help="use plain http (default for loopback)")
    _add_timeout(p)
    p.set_defaults(run=cmd_fetch, is_async=True)

    p = sub.add_parser(
        "login",
        parents=[common],
        help="check credentials with a registry and store them, as docker login does",
        description=(
            "Ask for the password (a prompt, or --password-stdin; never an argument), check "
            "the credentials with GET /v2/ on the registry, then store them through the "
            "credential helper the Docker config names for it (credHelpers, credsStore) or "
            "in DOCKER_CONFIG/config.json or ~/.docker/config.json, in docker's format. "
            "REGISTRY defaults to Docker Hub."
        ),
    )
    p.add_argument(
        "registry",
        metavar="REGISTRY",
        nargs="?",
        default=DOCKER_HUB,
        help="host[:port] (default: Docker Hub)",
    )
    p.add_argument("-u", "--username", metavar="NAME", help="the user name (prompted if absent)")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (one trailing newline is dropped)",
    )
    p.add_argument("--insecure", action="store_true", help="use plain http (default for loopback)")
    _add_timeout(p)
    p.set_defaults(run=cmd_login, is_async=False)

    p = sub.add_parser(
        "logout",
        parents=[common],
        help="remove a registry's stored credentials",
        description=(
            "Remove the credentials stored for REGISTRY: from the credential helper the Docker "
            "config names for it (erase), and from the config file's auths. "
            "REGISTRY defaults to Docker Hub."
        ),
    )
    p.add_argument(
        "registry",
        metavar="REGISTRY",
        nargs="?",
        default=DOCKER_HUB,
        help="host[:port] (default: Docker Hub)",
    )
    p.set_defaults(run=cmd_logout, is_async=False)
    return parser


# -- main ------------------------------------------------------------------------------


@contextlib.contextmanager
def _logging(debug: bool) -> Iterator[None]:
    """Log the ``aociauth`` logger to stderr (debug level with ``--debug``), then restore it.

    Restoring matters when :func:`main` is called in-process (tests, other tools).
    """
    logger = logging.getLogger("aociauth")
    saved = (logger.level, logger.propagate)
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _classify(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for an error."""
    if isinstance(exc, CLIError):
        return exc.code, exc.message
    if isinstance(exc, CredentialLookupError | ConfigError):
        return EXIT_CONFIG, str(exc)
    if isinstance(exc, TokenServerError) and exc.status is None:
        # No answer at all: the token server could not be reached or timed out.
        return EXIT_UNREACHABLE, str(exc)
    if isinstance(exc, TokenServerError) and exc.anonymous and not exc.credentials_found:
        return EXIT_FAILED, str(exc) + _login_hint(exc.registry or "")
    if isinstance(exc, OCIAuthError):
        return EXIT_FAILED, str(exc)
    if isinstance(exc, aiohttp.InvalidURL):
        return EXIT_USAGE, f"invalid URL: {redact_url(str(exc.url))}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return EXIT_UNREACHABLE, f"cannot connect to {exc.host}:{exc.port}: {exc.strerror}"
    if isinstance(exc, aiohttp.ClientConnectionError | asyncio.TimeoutError):
        what = str(exc) or type(exc).__name__
        return EXIT_UNREACHABLE, f"connection failed: {redact_text(what)}"
    if isinstance(exc, aiohttp.ClientError):
        return EXIT_FAILED, redact_text(str(exc) or type(exc).__name__)
    return EXIT_INTERNAL, (
        f"internal error: {type(exc).__name__}: {redact_text(str(exc))} "
        "(run with --debug for the traceback)"
    )


def _silence_stdout() -> None:
    # Python flushes stdout at exit; pointed at a closed pipe it would complain again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (``aociauth`` exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    out = sys.stdout
    try:
        with _logging(debug):
            if args.is_async:
                return int(asyncio.run(args.run(args, out)))
            return int(args.run(args, out))
    except KeyboardInterrupt:
        print("aociauth: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`aociauth fetch ... | head`): nothing left to say.
        _silence_stdout()
        return EXIT_FAILED
    except Exception as exc:
        code, message = _classify(exc)
        if debug:
            import traceback

            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        print(f"aociauth: error: {_one_line(message)}", file=sys.stderr)
        return code
