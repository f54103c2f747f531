"""An in-process OCI registry that authenticates like distribution 2.8.

:class:`Registry` keeps manifests, tags and blobs in memory and serves the
distribution v2 API on ``127.0.0.1``. Its challenges, 401 bodies and access
rules copy the reference registry (Debian's docker-registry 2.8.2), quirks
included: the ``Www-Authenticate`` formats, ``error="invalid_token"`` and
``error="insufficient_scope"``, the two-resource challenge of a blob mount,
``registry:catalog:*`` granted literally, the 404 for an OCI manifest asked
for without its media type in ``Accept``, upload locations built from the
request's ``Host``. :class:`RecordingServer` is a plain server that serves
blobs and records every request it gets, to stand for a CDN or an attacker.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import hmac
import json
import random
import re
import secrets
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote

from aiohttp import web
from multidict import CIMultiDict, MultiDict

from aociauth._reference import DIGEST, NAME, TAG, is_registered_digest
from aociauth.testing._http import Exchange, LoopbackServer, json_response
from aociauth.testing.tokenserver import TokenServer

__all__ = [
    "OCI_INDEX",
    "OCI_MANIFEST",
    "AuthMode",
    "BlobRedirectStyle",
    "RecordedRequest",
    "RecordingServer",
    "Registry",
    "RegistryCounters",
    "RegistryRequest",
    "SeededImage",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"

AuthMode = Literal["none", "basic", "bearer"]

BlobRedirectStyle = Literal["s3", "gcs", "azure", "cloudfront", "cloudflare"]
"""The shape of a blob redirect's signed URL: which storage service signed it."""

#: Docker Hub's answer once the pull rate limit is spent
#: (https://docs.docker.com/docker-hub/usage/pulls/).
DOCKER_HUB_RATE_LIMIT_MESSAGE = (
    "You have reached your pull rate limit. You may increase the limit by authenticating "
    "and upgrading: https://www.docker.com/increase-rate-limit"
)

#: ECR's answer to an authorization token past its 12 hours
#: (flipt-io/flipt#3043, kcl-lang/kpm PR #698): 403, and no challenge.
ECR_EXPIRED_MESSAGE = "Your authorization token has expired. Reauthenticate and try again."

# A resource and an action, as distribution's access records: (type, name, action).
_Record = tuple[str, str, str]

# The routes match a digest by the grammar alone, as distribution's router
# does; a blob's handler then wants a registered algorithm.
_NAME = rf"(?P<name>{NAME})"

_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("base", re.compile(r"/v2/")),
    ("catalog", re.compile(r"/v2/_catalog")),
    ("tags", re.compile(rf"/v2/{_NAME}/tags/list")),
    ("manifest", re.compile(rf"/v2/{_NAME}/manifests/(?P<reference>{TAG}|{DIGEST})")),
    ("upload_start", re.compile(rf"/v2/{_NAME}/blobs/uploads/")),
    ("upload", re.compile(rf"/v2/{_NAME}/blobs/uploads/(?P<uuid>[a-zA-Z0-9-_.=]+)")),
    ("blob", re.compile(rf"/v2/{_NAME}/blobs/(?P<digest>{DIGEST})")),
    ("referrers", re.compile(rf"/v2/{_NAME}/referrers/(?P<digest>{DIGEST})")),
)

_ALLOWED = {
    "catalog": "GET",
    "tags": "GET",
    "manifest": "DELETE, GET, HEAD, PUT",
    "blob": "DELETE, GET, HEAD",
    "upload": "DELETE, GET, HEAD, PATCH, PUT",
    "referrers": "GET",
}

_ACTIONS_BY_METHOD = {
    "GET": ("pull",),
    "HEAD": ("pull",),
    "POST": ("pull", "push"),
    "PUT": ("pull", "push"),
    "PATCH": ("pull", "push"),
    "DELETE": ("delete",),
}

_CATALOG_DEFAULT = 100
_CATALOG_MAX = 1000
_ACCESS_CACHE_LIMIT = 10_000


def _digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


_NO_DETAIL: Any = object()


def _error(status: int, code: str, message: str, detail: Any = _NO_DETAIL) -> web.Response:
    entry: dict[str, Any] = {"code": code, "message": message}
    if detail is not _NO_DETAIL:
        entry["detail"] = detail
    return json_response({"errors": [entry]}, status=status)


def _not_found_page() -> web.Response:
    return web.Response(
        status=404,
        text="404 page not found\n",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def _method_not_allowed(allow: str) -> web.Response:
    return web.Response(
        status=405,
        text="Method not allowed\n",
        headers={"Allow": allow, "X-Content-Type-Options": "nosniff"},
    )


def _unsupported() -> web.Response:
    return _error(405, "UNSUPPORTED", "The operation is unsupported.")


def _accepted_types(request: web.Request) -> set[str]:
    types = set()
    for header in request.headers.getall("Accept", []):
        for item in header.split(","):
            media_type = item.split(";", 1)[0].strip()
            if media_type:
                types.add(media_type)
    return types


@dataclass
class RegistryCounters:
    """What a :class:`Registry` has done since it was made or last reset.

    ``requests`` counts every request; ``by_status`` the answers by status.
    ``anonymous``/``basic``/``bearer`` split requests by the Authorization
    they carried. ``unauthorized`` counts 401 answers, of which
    ``invalid_token`` and ``insufficient_scope`` say why. ``failures_injected``
    counts answers from :meth:`~Registry.fail_next` and ``failure_rate``;
    ``blob_redirects`` the 307s to :attr:`~Registry.blob_redirect`.
    """

    requests: int = 0
    by_status: collections.Counter[int] = field(default_factory=collections.Counter)
    anonymous: int = 0
    basic: int = 0
    bearer: int = 0
    unauthorized: int = 0
    invalid_token: int = 0
    insufficient_scope: int = 0
    failures_injected: int = 0
    blob_redirects: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


@dataclass
class RegistryRequest:
    """One request the registry received.

    ``auth_scheme`` is the scheme of its Authorization header as sent
    (``"Bearer"``, ``"Basic"``) or ``None``, never the credential itself.
    For a token the registry accepted, ``subject`` is its ``sub`` and
    ``scope`` its ``access`` claim as a scope string
    (``"repository:a:pull,push registry:catalog:*"``); for Basic credentials
    that matched, ``subject`` is the user name.
    """

    method: str
    path: str
    query: str
    auth_scheme: str | None
    subject: str | None = None
    scope: str | None = None
    status: int = 0


@dataclass(frozen=True)
class SeededImage:
    """The digests of an image stored by :meth:`Registry.seed_image`."""

    repository: str
    tag: str
    manifest_digest: str
    manifest: bytes
    config_digest: str
    layer_digests: tuple[str, ...]
    media_type: str = OCI_MANIFEST


@dataclass(frozen=True)
class _Manifest:
    media_type: str
    content: bytes
    subject: str | None
    artifact_type: str | None
    annotations: Mapping[str, str] | None


@dataclass
class _Repository:
    blobs: set[str] = field(default_factory=set)
    manifests: dict[str, _Manifest] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class _Upload:
    repository: str
    data: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class _Failure:
    status: int
    body: bytes
    retry_after: str | None
    path_contains: str | None


class Registry(LoopbackServer):
    """An in-memory OCI distribution registry on ``127.0.0.1``, for tests.

    ``auth`` picks how it authenticates:

    * ``"none"``: everything is open.
    * ``"basic"``: ``users`` (name -> password) with the challenge
      ``Basic realm="<basic_realm>"``, as distribution's htpasswd mode.
    * ``"bearer"``: tokens from ``token_server`` (a running
      :class:`~aociauth.testing.TokenServer`), verified with its issuer and
      ``leeway`` seconds on ``exp``/``nbf`` (60, as distribution). ``realm``
      and ``service`` override what the challenge announces.

    Other knobs, all attributes that may change while it runs:
    ``shuffle_challenges`` puts resources and actions in challenges in a
    random (``seed``-ed) order, as distribution's map iteration does;
    ``blob_redirect`` (a base URL) makes blob GET/HEAD answer 307 to
    ``<base>/<digest>?X-Amz-...`` like a pre-signed storage URL;
    ``delete_enabled`` (off in distribution's default config, so DELETE
    answers 405 UNSUPPORTED); ``monolithic_post`` stores the body of
    ``POST .../blobs/uploads/?digest=`` (the OCI spec; distribution 2.8
    ignores it and opens a session); ``referrers`` serves the OCI 1.1
    referrers API (2.8 does not have it); ``latency`` seconds per request;
    ``failure_rate`` with ``failure_status``; ``record_requests``.

    Knobs for registries that are not distribution (the registry zoo,
    :mod:`aociauth.testing.zoo`, sets them per registry):
    ``token_path`` serves ``token_server``'s endpoint at this path on the
    registry's own host, as GHCR, GCR, ACR, Quay and Harbor do;
    ``blob_redirect_style`` picks the signed URL's shape (:data:`BlobRedirectStyle`);
    ``basic_service`` adds a ``service`` parameter to the Basic challenge
    (ECR); ``expired_passwords`` are Basic passwords answered 403 DENIED
    "Your authorization token has expired" (ECR); ``challenge_scope=False``
    leaves ``scope`` out of Bearer challenges (Quay); ``accept_basic`` takes
    ``users``' Basic credentials in bearer mode too, and
    ``basic_challenge_after_refusal`` answers a request whose Authorization
    was refused with a Basic challenge (both Harbor); ``pull_limit`` manifest
    GETs per subject and ``pull_window`` seconds make Docker Hub's
    ``RateLimit-*`` headers and its 429 ``TOOMANYREQUESTS``.
    ``ssl_context`` and ``tap``: see :class:`~aociauth.testing._http.LoopbackServer`.

    ``counters`` and ``requests`` tell what happened; ``blobs`` maps every
    stored digest to its content.
    """

    def __init__(
        self,
        *,
        auth: AuthMode = "none",
        token_server: TokenServer | None = None,
        users: Mapping[str, str] | None = None,
        basic_realm: str = "basic-realm",
        realm: str | None = None,
        service: str | None = None,
        leeway: float = 60.0,
        shuffle_challenges: bool = False,
        seed: int = 0,
        blob_redirect: str | None = None,
        delete_enabled: bool = False,
        monolithic_post: bool = True,
        referrers: bool = True,
        latency: float = 0.0,
        failure_rate: float = 0.0,
        failure_status: int = 503,
        record_requests: bool = True,
        token_path: str | None = None,
        blob_redirect_style: BlobRedirectStyle = "s3",
        basic_service: str | None = None,
        challenge_scope: bool = True,
        accept_basic: bool = False,
        basic_challenge_after_refusal: bool = False,
        pull_limit: int | None = None,
        pull_window: int = 21600,
        ssl_context: ssl.SSLContext | None = None,
        tap: list[Exchange] | None = None,
    ) -> None:
        super().__init__(ssl_context=ssl_context, tap=tap)
        if auth not in ("none", "basic", "bearer"):
            raise ValueError(f"unknown auth mode {auth!r}")
        if auth == "bearer" and token_server is None:
            raise ValueError("bearer auth needs a token_server")
        self.auth: AuthMode = auth
        self.token_server = token_server
        self.users: dict[str, str] = dict(users or {})
        self.basic_realm = basic_realm
        self._realm = realm
        self._service = service
        self.leeway = leeway
        self.shuffle_challenges = shuffle_challenges
        self.blob_redirect = blob_redirect
        self.delete_enabled = delete_enabled
        self.monolithic_post = monolithic_post
        self.referrers = referrers
        self.latency = latency
        self.failure_rate = failure_rate
        self.failure_status = failure_status
        self.record_requests = record_requests
        self.token_path = token_path
        self.blob_redirect_style: BlobRedirectStyle = blob_redirect_style
        self.basic_service = basic_service
        self.challenge_scope = challenge_scope
        self.accept_basic = accept_basic
        self.basic_challenge_after_refusal = basic_challenge_after_refusal
        self.pull_limit = pull_limit
        self.pull_window = pull_window
        self.expired_passwords: set[str] = set()
        """Basic passwords answered 403 "authorization token has expired" (ECR)."""
        self.pulls: collections.Counter[str | None] = collections.Counter()
        """Manifest GETs per subject (None: anonymous), counted against ``pull_limit``."""
        self.blobs: dict[str, bytes] = {}
        """Every stored blob: digest -> content (shared by all repositories)."""
        self.counters = RegistryCounters()
        self.requests: list[RegistryRequest] = []
        # Seeded so that a shuffle or failure pattern repeats from run to run.
        self._random = random.Random(seed)  # noqa: S311
        self._repositories: dict[str, _Repository] = {}
        self._uploads: dict[str, _Upload] = {}
        self._failures: list[_Failure] = []
        self._access_cache: dict[str, tuple[frozenset[_Record], str]] = {}

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"Registry({where}, auth={self.auth!r})"

    @property
    def realm(self) -> str:
        """The realm the Bearer challenge announces."""
        if self._realm is not None:
            return self._realm
        if self.token_server is None:
            raise RuntimeError("this registry has no token server")
        return self.token_server.realm

    @property
    def service(self) -> str:
        """The service the Bearer challenge announces."""
        if self._service is not None:
            return self._service
        if self.token_server is None:
            raise RuntimeError("this registry has no token server")
        return self.token_server.service

    def reset_counters(self) -> None:
        """Zero :attr:`counters` and forget :attr:`requests`."""
        in_flight = self.counters.in_flight
        self.counters = RegistryCounters(in_flight=in_flight, max_in_flight=in_flight)
        self.requests.clear()
        self._arrivals = 0

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        *,
        body: bytes | str | None = None,
        retry_after: float | str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests (whose path contains ``path_contains``) with ``status``.

        The answer comes before authentication, as from a front proxy.
        ``retry_after`` (seconds or an HTTP date) is sent as ``Retry-After``.
        """
        if body is None:
            raw = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "injected"}]}).encode()
        else:
            raw = body.encode() if isinstance(body, str) else body
        after = None if retry_after is None else str(retry_after)
        self._failures.extend(_Failure(status, raw, after, path_contains) for _ in range(n))

    def rate_limit_next(
        self, n: int = 1, *, retry_after: float | str = 1, path_contains: str | None = None
    ) -> None:
        """Answer the next ``n`` requests 429 TOOMANYREQUESTS with ``Retry-After``."""
        body = {"errors": [{"code": "TOOMANYREQUESTS", "message": "too many requests"}]}
        self.fail_next(
            n,
            429,
            body=json.dumps(body, separators=(",", ":")),
            retry_after=retry_after,
            path_contains=path_contains,
        )

    def seed_blob(self, repository: str, data: bytes) -> str:
        """Store ``data`` as a blob of ``repository``; return its digest."""
        digest = _digest_of(data)
        self.blobs[digest] = bytes(data)
        self._repository(repository).blobs.add(digest)
        return digest

    def seed_manifest(
        self, repository: str, reference: str, content: bytes, media_type: str = OCI_MANIFEST
    ) -> str:
        """Store a manifest, tagged ``reference`` unless that is its digest; return the digest.

        Unlike a PUT, this checks neither the content nor its blobs.
        """
        digest = _digest_of(content)
        repo = self._repository(repository)
        repo.manifests[digest] = self._parse_manifest(content, media_type)
        if reference != digest:
            repo.tags[reference] = digest
        return digest

    def seed_image(
        self, repository: str, tag: str = "latest", *, layer: bytes | None = None
    ) -> SeededImage:
        """Store a small valid OCI image (config, one layer, manifest) and tag it.

        The layer defaults to bytes derived from ``repository`` and ``tag``,
        so different images have different digests.
        """
        layer_data = layer if layer is not None else f"layer of {repository}:{tag}\n".encode()
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [_digest_of(layer_data)]},
            },
            separators=(",", ":"),
        ).encode()
        config_digest = self.seed_blob(repository, config)
        layer_digest = self.seed_blob(repository, layer_data)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [
                    {"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer_data)}
                ],
            },
            separators=(",", ":"),
        ).encode()
        digest = self.seed_manifest(repository, tag, manifest)
        return SeededImage(repository, tag, digest, manifest, config_digest, (layer_digest,))

    def has_blob(self, repository: str, digest: str) -> bool:
        """Whether ``repository`` holds (links) the blob ``digest``."""
        repo = self._repositories.get(repository)
        return repo is not None and digest in repo.blobs

    def manifest(self, repository: str, reference: str) -> bytes | None:
        """The manifest stored under ``reference`` (a tag or digest), or ``None``."""
        repo = self._repositories.get(repository)
        if repo is None:
            return None
        stored = repo.manifests.get(repo.tags.get(reference, reference))
        return None if stored is None else stored.content

    def tags(self, repository: str) -> list[str]:
        """The tags of ``repository``, sorted."""
        repo = self._repositories.get(repository)
        return sorted(repo.tags) if repo is not None else []

    def repositories(self) -> list[str]:
        """The repositories holding anything, sorted, as the catalog lists them."""
        return sorted(
            name for name, repo in self._repositories.items() if repo.blobs or repo.manifests
        )

    def _repository(self, name: str) -> _Repository:
        repo = self._repositories.get(name)
        if repo is None:
            repo = self._repositories[name] = _Repository()
        return repo

    @staticmethod
    def _parse_manifest(content: bytes, media_type: str) -> _Manifest:
        subject = artifact_type = None
        annotations = None
        try:
            parsed = json.loads(content)
        except (UnicodeDecodeError, json.JSONDecodeError):
            parsed = None
        if isinstance(parsed, dict):
            if isinstance(parsed.get("subject"), dict):
                subject = parsed["subject"].get("digest")
            artifact_type = parsed.get("artifactType")
            if artifact_type is None and isinstance(parsed.get("config"), dict):
                artifact_type = parsed["config"].get("mediaType")
            if isinstance(parsed.get("annotations"), dict):
                annotations = parsed["annotations"]
        return _Manifest(media_type, bytes(content), subject, artifact_type, annotations)

    # -- serving -------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.token_path is not None and request.path == self.token_path:
            if self.token_server is None:
                raise RuntimeError("token_path needs a token_server")
            return await self.token_server.handle(request)
        counters = self.counters
        counters.requests += 1
        counters.in_flight += 1
        counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
        self._arrive()
        authorization = request.headers.get("Authorization")
        scheme = authorization.split(" ", 1)[0] if authorization else None
        record = RegistryRequest(request.method, request.path, request.query_string, scheme)
        if self.record_requests:
            self.requests.append(record)
        self._count_scheme(scheme)
        try:
            await self._gate()
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            response = self._injected(request.path)
            if response is None:
                response = await self._serve(request, record)
            else:
                counters.failures_injected += 1
        finally:
            counters.in_flight -= 1
        response.headers["Docker-Distribution-Api-Version"] = "registry/2.0"
        record.status = response.status
        counters.by_status[response.status] += 1
        if response.status == 401:
            counters.unauthorized += 1
        return response

    def _count_scheme(self, scheme: str | None) -> None:
        lowered = scheme.lower() if scheme else None
        if lowered == "bearer":
            self.counters.bearer += 1
        elif lowered == "basic":
            self.counters.basic += 1
        elif lowered is None:
            self.counters.anonymous += 1

    def _injected(self, path: str) -> web.Response | None:
        for index, failure in enumerate(self._failures):
            if failure.path_contains is None or failure.path_contains in path:
                del self._failures[index]
                headers = {"Content-Type": "application/json; charset=utf-8"}
                if failure.retry_after is not None:
                    headers["Retry-After"] = failure.retry_after
                return web.Response(status=failure.status, body=failure.body, headers=headers)
        if self.failure_rate > 0 and self._random.random() < self.failure_rate:
            return _error(self.failure_status, "UNAVAILABLE", "injected failure")
        return None

    async def _serve(self, request: web.Request, record: RegistryRequest) -> web.Response:
        path = request.path
        if path == "/v2":
            return web.Response(
                status=301,
                text='<a href="/v2/">Moved Permanently</a>.\n\n',
                content_type="text/html",
                headers={"Location": "/v2/"},
            )
        routed = _route(path)
        if routed is None:
            return _not_found_page()
        kind, params = routed
        if kind == "referrers" and not self.referrers:
            return _not_found_page()
        denied = self._authorize(request, self._access_records(kind, params, request), record)
        if denied is not None:
            return denied
        if self.pull_limit is not None and kind == "manifest" and request.method == "GET":
            return await self._rate_limited(kind, params, request, record)
        return await self._dispatch(kind, params, request)

    async def _rate_limited(
        self, kind: str, params: dict[str, str], request: web.Request, record: RegistryRequest
    ) -> web.Response:
        # Docker Hub counts manifest GETs (not HEADs) per user, or per address when
        # anonymous, and says how many are left (https://docs.docker.com/docker-hub/usage/pulls/).
        assert self.pull_limit is not None
        window = f";w={self.pull_window}"
        used = self.pulls[record.subject]
        headers = {
            "RateLimit-Limit": f"{self.pull_limit}{window}",
            "Docker-RateLimit-Source": record.subject or "127.0.0.1",
        }
        if used >= self.pull_limit:
            headers["RateLimit-Remaining"] = f"0{window}"
            error = {"code": "TOOMANYREQUESTS", "message": DOCKER_HUB_RATE_LIMIT_MESSAGE}
            body = {"errors": [error]}
            return json_response(body, status=429, headers=headers)
        self.pulls[record.subject] = used + 1
        response = await self._dispatch(kind, params, request)
        headers["RateLimit-Remaining"] = f"{self.pull_limit - used - 1}{window}"
        response.headers.update(headers)
        return response

    async def _dispatch(
        self, kind: str, params: dict[str, str], request: web.Request
    ) -> web.Response:
        method = request.method
        if kind == "base":
            return web.Response(body=b"{}", content_type="application/json", charset="utf-8")
        if kind == "upload_start":
            if method != "POST":
                return _error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry")
            return await self._start_upload(params["name"], request)
        allow = _ALLOWED[kind]
        if method == "OPTIONS":
            return web.Response(headers={"Allow": allow})
        if method not in allow.split(", "):
            return _method_not_allowed(allow)
        if kind == "catalog":
            return self._catalog(request)
        if kind == "tags":
            return self._tags(params["name"])
        if kind == "manifest":
            return await self._manifest(params["name"], params["reference"], request)
        if kind == "blob":
            return self._blob(params["name"], params["digest"], request)
        if kind == "upload":
            return await self._upload(params["name"], params["uuid"], request)
        return self._referrers(params["name"], params["digest"], request)

    # -- authorization -------------------------------------------------------

    @staticmethod
    def _access_records(
        kind: str, params: Mapping[str, str], request: web.Request
    ) -> list[_Record]:
        # distribution 2.8, registry/handlers/app.go: authorized/appendAccessRecords.
        if kind == "base":
            return []
        if kind == "catalog":
            return [("registry", "catalog", "*")]
        name = params["name"]
        records = [("repository", name, a) for a in _ACTIONS_BY_METHOD.get(request.method, ())]
        from_repo = request.query.get("from")
        if from_repo:
            records.append(("repository", from_repo, "pull"))
        return records

    def _authorize(
        self, request: web.Request, records: list[_Record], record: RegistryRequest
    ) -> web.Response | None:
        if self.auth == "none":
            return None
        if self.auth == "basic":
            return self._authorize_basic(request, records, record)
        return self._authorize_bearer(request, records, record)

    def _authorize_basic(
        self, request: web.Request, records: list[_Record], record: RegistryRequest
    ) -> web.Response | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, sep, password = (
                    base64.b64decode(value.strip(), validate=True).decode().partition(":")
                )
            except (binascii.Error, UnicodeDecodeError):
                sep = ""
            expected = self.users.get(user) if sep else None
            if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
                record.subject = user
                return None
            if sep and password in self.expired_passwords:
                return _error(403, "DENIED", ECR_EXPIRED_MESSAGE)
        return self._unauthorized(records, self._basic_challenge())

    def _basic_challenge(self) -> str:
        challenge = f'Basic realm="{self.basic_realm}"'
        if self.basic_service is not None:
            challenge += f',service="{self.basic_service}"'
        return challenge

    def _basic_user(self, request: web.Request) -> str | None:
        """The user whose Basic credentials, among :attr:`users`, the request carries."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        expected = self.users.get(user) if sep else None
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            return None
        return user

    def _authorize_bearer(
        self, request: web.Request, records: list[_Record], record: RegistryRequest
    ) -> web.Response | None:
        assert self.token_server is not None
        if self.accept_basic:
            user = self._basic_user(request)
            if user is not None:
                record.subject = user
                return None
        carried = "Authorization" in request.headers
        # distribution splits on every space: "Bearer  x" is not a token.
        parts = request.headers.get("Authorization", "").split(" ")
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return self._refuse_bearer(records, None, carried)
        token = parts[1]
        try:
            claims = self.token_server.verify(token, leeway=self.leeway)
        except ValueError:
            self.counters.invalid_token += 1
            return self._refuse_bearer(records, "invalid_token", carried)
        granted, record.scope = self._granted(token, claims)
        record.subject = str(claims.get("sub", ""))
        if any(needed not in granted for needed in records):
            self.counters.insufficient_scope += 1
            return self._refuse_bearer(records, "insufficient_scope", carried)
        return None

    def _refuse_bearer(
        self, records: list[_Record], error: str | None, carried: bool
    ) -> web.Response:
        if carried and self.basic_challenge_after_refusal:
            # Harbor challenges with Basic a request that carried credentials it
            # refused (google/go-containerregistry#1744).
            return self._unauthorized(records, self._basic_challenge())
        return self._bearer_challenge(records, error)

    def _granted(self, token: str, claims: Mapping[str, Any]) -> tuple[frozenset[_Record], str]:
        """The accesses ``token`` grants, and them as a scope string; memoised per token."""
        cached = self._access_cache.get(token)
        if cached is None:
            in_order = _granted_in_order(claims)
            cached = (frozenset(in_order), _scope_string(in_order))
            if len(self._access_cache) >= _ACCESS_CACHE_LIMIT:
                self._access_cache.clear()
            self._access_cache[token] = cached
        return cached

    def _bearer_challenge(self, records: list[_Record], error: str | None) -> web.Response:
        challenge = f'Bearer realm="{self.realm}",service="{self.service}"'
        if records and self.challenge_scope:
            challenge += f',scope="{self._scope_param(records)}"'
        if error is not None:
            challenge += f',error="{error}"'
        return self._unauthorized(records, challenge)

    def _scope_param(self, records: Sequence[_Record]) -> str:
        grouped: dict[tuple[str, str], list[str]] = {}
        for resource_type, name, action in records:
            actions = grouped.setdefault((resource_type, name), [])
            if action not in actions:
                actions.append(action)
        items = list(grouped.items())
        if self.shuffle_challenges:
            self._random.shuffle(items)
            for _, actions in items:
                self._random.shuffle(actions)
        return " ".join(f"{t}:{n}:{','.join(actions)}" for (t, n), actions in items)

    @staticmethod
    def _unauthorized(records: list[_Record], challenge: str) -> web.Response:
        detail = [{"Type": t, "Class": "", "Name": n, "Action": a} for t, n, a in records] or None
        body = {
            "errors": [
                {"code": "UNAUTHORIZED", "message": "authentication required", "detail": detail}
            ]
        }
        return json_response(body, status=401, headers={"WWW-Authenticate": challenge})

    # -- handlers ------------------------------------------------------------

    def _catalog(self, request: web.Request) -> web.Response:
        limit = _CATALOG_DEFAULT
        raw = request.query.get("n")
        if raw is not None:
            try:
                number = int(raw)
            except ValueError:
                number = -1
            if number > _CATALOG_MAX:
                return _error(
                    400,
                    "PAGINATION_NUMBER_INVALID",
                    "invalid number of results requested",
                    {"n": number},
                )
            if number >= 0:
                limit = number
        last = request.query.get("last", "")
        names = [name for name in self.repositories() if name > last]
        page = names[:limit]
        headers = {}
        if len(names) > limit and page:
            next_query = f"last={quote(page[-1], safe='')}&n={limit}"
            headers["Link"] = f'</v2/_catalog?{next_query}>; rel="next"'
        return json_response({"repositories": page}, headers=headers)

    def _tags(self, name: str) -> web.Response:
        repo = self._repositories.get(name)
        if repo is None or not repo.tags:
            return _error(
                404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name}
            )
        return json_response({"name": name, "tags": sorted(repo.tags)})

    async def _manifest(self, name: str, reference: str, request: web.Request) -> web.Response:
        if request.method == "PUT":
            return await self._put_manifest(name, reference, request)
        if request.method == "DELETE":
            return self._delete_manifest(name, reference)
        repo = self._repositories.get(name)
        digest = reference if ":" in reference else None
        if repo is not None and digest is None:
            digest = repo.tags.get(reference)
        stored = repo.manifests.get(digest) if repo is not None and digest else None
        if stored is None or digest is None:
            return _manifest_unknown(name, reference)
        accepted = _accepted_types(request)
        # distribution 2.8 hides an OCI manifest or index from a client that
        # does not list its media type, even behind "*/*".
        if stored.media_type == OCI_MANIFEST and OCI_MANIFEST not in accepted:
            return _error(
                404,
                "MANIFEST_UNKNOWN",
                "OCI manifest found, but accept header does not support OCI manifests",
            )
        if stored.media_type == OCI_INDEX and OCI_INDEX not in accepted:
            return _error(
                404,
                "MANIFEST_UNKNOWN",
                "OCI index found, but accept header does not support OCI indexes",
            )
        headers = {
            "Content-Type": stored.media_type,
            "Docker-Content-Digest": digest,
            "Etag": f'"{digest}"',
        }
        return web.Response(body=stored.content, headers=headers)

    async def _put_manifest(self, name: str, reference: str, request: web.Request) -> web.Response:
        content = await request.read()
        try:
            parsed = json.loads(content)
        except (UnicodeDecodeError, json.JSONDecodeError):
            parsed = None
        if not isinstance(parsed, dict):
            return _error(400, "MANIFEST_INVALID", "manifest invalid", {})
        media_type = request.content_type
        if media_type in ("", "application/octet-stream"):
            media_type = str(parsed.get("mediaType") or OCI_MANIFEST)
        digest = _digest_of(content)
        if ":" in reference and reference != digest:
            return _error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        repo = self._repository(name)
        missing = [
            d
            for d in _referenced_digests(parsed)
            if d not in repo.blobs and d not in repo.manifests
        ]
        if missing:
            errors = [
                {
                    "code": "MANIFEST_BLOB_UNKNOWN",
                    "message": "blob unknown to registry",
                    "detail": d,
                }
                for d in missing
            ]
            return json_response({"errors": errors}, status=400)
        repo.manifests[digest] = self._parse_manifest(content, media_type)
        if ":" not in reference:
            repo.tags[reference] = digest
        return web.Response(
            status=201,
            headers={
                "Docker-Content-Digest": digest,
                "Location": f"{_base_url(request)}/v2/{name}/manifests/{digest}",
            },
        )

    def _delete_manifest(self, name: str, reference: str) -> web.Response:
        if not self.delete_enabled:
            return _unsupported()
        repo = self._repositories.get(name)
        if repo is None:
            return _manifest_unknown(name, reference)
        if ":" not in reference:
            if repo.tags.pop(reference, None) is None:
                return _manifest_unknown(name, reference)
            return web.Response(status=202)
        if repo.manifests.pop(reference, None) is None:
            return _manifest_unknown(name, reference)
        for tag in [t for t, d in repo.tags.items() if d == reference]:
            del repo.tags[tag]
        return web.Response(status=202)

    def _blob(self, name: str, digest: str, request: web.Request) -> web.Response:
        if not is_registered_digest(digest):
            return _error(
                400, "DIGEST_INVALID", "provided digest did not match uploaded content", {}
            )
        repo = self._repositories.get(name)
        if request.method == "DELETE":
            if not self.delete_enabled:
                return _unsupported()
            if repo is None or digest not in repo.blobs:
                return _error(404, "BLOB_UNKNOWN", "blob unknown to registry", digest)
            repo.blobs.discard(digest)
            return web.Response(status=202)
        if repo is None or digest not in repo.blobs:
            return _error(404, "BLOB_UNKNOWN", "blob unknown to registry", digest)
        if self.blob_redirect is not None:
            self.counters.blob_redirects += 1
            return web.Response(status=307, headers={"Location": self._presigned(digest)})
        headers = {
            "Accept-Ranges": "bytes",
            "Cache-Control": "max-age=31536000",
            "Content-Type": "application/octet-stream",
            "Docker-Content-Digest": digest,
            "Etag": f'"{digest}"',
        }
        return web.Response(body=self.blobs[digest], headers=headers)

    def _presigned(self, digest: str) -> str:
        assert self.blob_redirect is not None
        signature = hashlib.sha256(f"{digest}{secrets.token_hex(8)}".encode()).hexdigest()
        base = self.blob_redirect.rstrip("/")
        expires = int(time.time()) + 1200
        style = self.blob_redirect_style
        if style == "cloudflare":
            # distribution's storage layout, signed by Cloudflare's "verify" token.
            algorithm, _, hex_digest = digest.partition(":")
            path = f"/registry-v2/docker/registry/v2/blobs/{algorithm}/{hex_digest[:2]}"
            path += f"/{hex_digest}"
            return f"{base}{path}/data?verify={expires}-{signature[:32]}"
        if style == "gcs":
            return (
                f"{base}/{digest}?GoogleAccessId=registry%40example.iam.gserviceaccount.com"
                f"&Expires={expires}&Signature={signature}"
            )
        if style == "azure":
            return f"{base}/{digest}?se={expires}&sig={signature}&sp=r&spr=https&sr=b&sv=2019-12-12"
        if style == "cloudfront":
            signed = f"Expires={expires}&Signature={signature}&Key-Pair-Id=APKAEXAMPLE"
            return f"{base}/{digest}?{signed}"
        return (
            f"{base}/{digest}"
            "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
            "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=1200&X-Amz-SignedHeaders=host"
            f"&X-Amz-Signature={signature}"
        )

    async def _start_upload(self, name: str, request: web.Request) -> web.Response:
        mount, from_repo = request.query.get("mount"), request.query.get("from")
        if mount and from_repo:
            source = self._repositories.get(from_repo)
            if source is not None and mount in source.blobs:
                self._repository(name).blobs.add(mount)
                return _blob_created(request, name, mount)
        digest = request.query.get("digest")
        if digest and self.monolithic_post:
            data = await request.read()
            if _digest_of(data) != digest:
                return _error(
                    400, "DIGEST_INVALID", "provided digest did not match uploaded content"
                )
            self.seed_blob(name, data)
            return _blob_created(request, name, digest)
        upload_id = str(uuid.uuid4())
        self._uploads[upload_id] = _Upload(name)
        return self._upload_progress(request, name, upload_id, 202)

    async def _upload(self, name: str, upload_id: str, request: web.Request) -> web.Response:
        upload = self._uploads.get(upload_id)
        if upload is None or upload.repository != name:
            return _error(404, "BLOB_UPLOAD_INVALID", "blob upload invalid")
        method = request.method
        if method == "DELETE":
            del self._uploads[upload_id]
            return web.Response(status=204)
        if method in ("GET", "HEAD"):
            return self._upload_progress(request, name, upload_id, 204)
        upload.data += await request.read()
        if method == "PATCH":
            return self._upload_progress(request, name, upload_id, 202)
        del self._uploads[upload_id]
        digest = request.query.get("digest", "")
        if _digest_of(bytes(upload.data)) != digest:
            return _error(
                400,
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                {"Digest": digest, "Reason": {}},
            )
        self.seed_blob(name, bytes(upload.data))
        return _blob_created(request, name, digest)

    def _upload_progress(
        self, request: web.Request, name: str, upload_id: str, status: int
    ) -> web.Response:
        size = len(self._uploads[upload_id].data)
        state = secrets.token_urlsafe(16)
        location = f"{_base_url(request)}/v2/{name}/blobs/uploads/{upload_id}?_state={state}"
        headers = {
            "Docker-Upload-UUID": upload_id,
            "Location": location,
            "Range": f"0-{max(size - 1, 0)}",
        }
        return web.Response(status=status, headers=headers)

    def _referrers(self, name: str, digest: str, request: web.Request) -> web.Response:
        wanted = request.query.get("artifactType")
        repo = self._repositories.get(name)
        descriptors = []
        for manifest_digest, stored in repo.manifests.items() if repo is not None else ():
            if stored.subject != digest:
                continue
            if wanted is not None and stored.artifact_type != wanted:
                continue
            descriptor: dict[str, Any] = {
                "mediaType": stored.media_type,
                "digest": manifest_digest,
                "size": len(stored.content),
            }
            if stored.artifact_type is not None:
                descriptor["artifactType"] = stored.artifact_type
            if stored.annotations:
                descriptor["annotations"] = dict(stored.annotations)
            descriptors.append(descriptor)
        headers = {} if wanted is None else {"OCI-Filters-Applied": "artifactType"}
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
        return json_response(index, headers=headers, content_type=OCI_INDEX)


def _route(path: str) -> tuple[str, dict[str, str]] | None:
    for kind, pattern in _ROUTES:
        match = pattern.fullmatch(path)
        if match is not None:
            return kind, match.groupdict()
    return None


def _granted_in_order(claims: Mapping[str, Any]) -> list[_Record]:
    """The (type, name, action) triples a token's ``access`` claim grants, in claim order."""
    granted: list[_Record] = []
    access = claims.get("access")
    if not isinstance(access, list):
        return granted
    for entry in access:
        if not isinstance(entry, dict):
            continue
        resource_type, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
        if isinstance(resource_type, str) and isinstance(name, str) and isinstance(actions, list):
            granted.extend((resource_type, name, a) for a in actions if isinstance(a, str))
    return granted


def _scope_string(records: Sequence[_Record]) -> str:
    grouped: dict[tuple[str, str], list[str]] = {}
    for resource_type, name, action in records:
        grouped.setdefault((resource_type, name), []).append(action)
    return " ".join(f"{t}:{n}:{','.join(actions)}" for (t, n), actions in grouped.items())


def _referenced_digests(manifest: Mapping[str, Any]) -> list[str]:
    descriptors: list[Any] = []
    if isinstance(manifest.get("config"), dict):
        descriptors.append(manifest["config"])
    for key in ("layers", "manifests"):
        if isinstance(manifest.get(key), list):
            descriptors.extend(manifest[key])
    return [
        d["digest"] for d in descriptors if isinstance(d, dict) and isinstance(d.get("digest"), str)
    ]


def _manifest_unknown(name: str, reference: str) -> web.Response:
    if ":" in reference:
        return _error(
            404, "MANIFEST_UNKNOWN", "manifest unknown", {"Name": name, "Revision": reference}
        )
    return _error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Tag": reference})


def _base_url(request: web.Request) -> str:
    # distribution builds absolute URLs from the request's Host header.
    return f"{request.scheme}://{request.host}"


def _blob_created(request: web.Request, name: str, digest: str) -> web.Response:
    return web.Response(
        status=201,
        headers={
            "Docker-Content-Digest": digest,
            "Location": f"{_base_url(request)}/v2/{name}/blobs/{digest}",
        },
    )


@dataclass
class RecordedRequest:
    """One request a :class:`RecordingServer` received, headers and body included.

    ``headers`` and ``body`` are left out of the repr: they are what a test
    inspects for leaked credentials, and a failing test should not print them.
    """

    method: str
    path: str
    query: MultiDict[str]
    headers: CIMultiDict[str] = field(repr=False)
    body: bytes = field(repr=False)

    @property
    def authorization(self) -> str | None:
        """The Authorization header, if one came."""
        return self.headers.get("Authorization")


_CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie")
_CREDENTIAL_FIELDS = ("password", "refresh_token", "access_token", "token")
_RECORDED_BODY_LIMIT = 1 << 20


class RecordingServer(LoopbackServer):
    """A server that records every request and serves blobs: a CDN or an attacker.

    GET/HEAD of a path whose last segment is a digest in ``blobs`` answers the
    blob; a path given to :meth:`set_response` answers that; anything else
    answers ``default_status``. Pass a registry's :attr:`Registry.blobs` to
    serve what it stores::

        async with Registry() as reg, RecordingServer(blobs=reg.blobs) as cdn:
            reg.blob_redirect = cdn.url

    :attr:`requests` keeps every request with its headers and (the first MiB
    of) its body; :meth:`credentials_seen` picks those carrying a credential.
    """

    def __init__(
        self,
        *,
        blobs: Mapping[str, bytes] | None = None,
        default_status: int = 404,
        ssl_context: ssl.SSLContext | None = None,
        tap: list[Exchange] | None = None,
    ):
        super().__init__(ssl_context=ssl_context, tap=tap)
        self.blobs: Mapping[str, bytes] = blobs if blobs is not None else {}
        self.default_status = default_status
        self.requests: list[RecordedRequest] = []
        self._responses: dict[str, tuple[int, bytes, dict[str, str]]] = {}

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"RecordingServer({where}, {len(self.requests)} requests)"

    def set_response(
        self,
        path: str,
        *,
        status: int = 200,
        body: bytes | str = b"",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer requests to ``path`` (any method, any query) with this."""
        raw = body.encode() if isinstance(body, str) else body
        self._responses[path] = (status, raw, dict(headers or {}))

    def credentials_seen(self) -> list[RecordedRequest]:
        """The requests that carried a credential.

        That is an Authorization, Proxy-Authorization or Cookie header, or a
        ``password``, ``refresh_token``, ``access_token`` or ``token``
        parameter in the query or a form body.
        """
        return [r for r in self.requests if _carries_credential(r)]

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        self._arrive()
        body = await request.read()
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=MultiDict(request.query),
                headers=CIMultiDict(request.headers),
                body=body[:_RECORDED_BODY_LIMIT],
            )
        )
        await self._gate()
        configured = self._responses.get(request.path)
        if configured is not None:
            status, raw, headers = configured
            return web.Response(status=status, body=raw, headers=headers)
        digest = _digest_in_path(request.path)
        if request.method in ("GET", "HEAD") and digest in self.blobs:
            return web.Response(
                body=self.blobs[digest],
                headers={"Content-Type": "application/octet-stream", "Etag": f'"{digest}"'},
            )
        return web.Response(status=self.default_status)


def _digest_in_path(path: str) -> str:
    """The digest a blob URL names: its last segment, or distribution's storage layout
    ``.../blobs/<algorithm>/<2 hex>/<hex>/data`` that Docker Hub's CDN URLs keep."""
    segments = path.rstrip("/").split("/")
    if len(segments) >= 4 and segments[-1] == "data":
        return f"{segments[-4]}:{segments[-2]}"
    return segments[-1]


def _carries_credential(request: RecordedRequest) -> bool:
    if any(name in request.headers for name in _CREDENTIAL_HEADERS):
        return True
    if any(name in request.query for name in _CREDENTIAL_FIELDS):
        return True
    content_type = request.headers.get("Content-Type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = parse_qsl(request.body.decode("latin-1"), keep_blank_values=True)
        return any(name in _CREDENTIAL_FIELDS for name, _ in form)
    return False
