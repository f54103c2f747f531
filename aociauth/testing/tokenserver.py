"""An in-process token server speaking the distribution token protocol.

It answers ``GET /token`` (the token spec: Basic credentials or anonymous,
``service``, ``scope``, ``offline_token``) and ``POST /token`` (the OAuth2
spec: ``grant_type=password`` and ``grant_type=refresh_token``), issuing JWTs
signed by its :class:`~aociauth.testing.TokenIssuer` that grant exactly the
allowed actions. Everything that changes its behaviour is a plain attribute,
so a test can change it between requests, and everything it did is counted
in :attr:`TokenServer.counters` and recorded in :attr:`TokenServer.requests`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import datetime
import hmac
import random
import secrets
import ssl
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal, NamedTuple, get_args

from aiohttp import web
from multidict import MultiDict

from aociauth.testing._http import Exchange, LoopbackServer, json_response
from aociauth.testing._jwt import Algorithm, TokenIssuer

__all__ = [
    "GARBAGE_KINDS",
    "Access",
    "Grants",
    "ScopeReading",
    "TokenField",
    "TokenRequest",
    "TokenServer",
    "TokenServerCounters",
]


class Access(NamedTuple):
    """One action on one resource, as a grants function is asked about it.

    The fields are named like :class:`aociauth.ResourceScope`'s.
    """

    resource_type: str
    resource: str
    action: str


Grants = Callable[[str | None, Access], bool] | Mapping[str | None, Mapping[str, Collection[str]]]
"""Who may do what: a function of (subject or None for anonymous, access), or a mapping.

The mapping form is ``{subject: {"TYPE:NAME-PATTERN": {actions}}}`` with
:func:`fnmatch.fnmatchcase` patterns, e.g.
``{"alice": {"repository:team/*": {"pull", "push"}}, None: {"repository:public/*": {"pull"}}}``.
The ``None`` key is anonymous, and its grants apply to every user too. Actions
match literally: ``registry:catalog`` needs ``{"*"}``, as in distribution.
"""

TokenField = Literal["both", "token", "access_token"]
"""Which field(s) of a token response carry the token."""

ScopeReading = Literal["all", "first", "last"]
"""Which ``scope`` parameters of a token request a server reads: all, or only one of them."""

GarbageKind = Literal[
    "html",
    "empty",
    "not_json",
    "json_array",
    "no_token",
    "huge",
    "redirect",
    "slow_body",
    "drop",
    "bad_token_chars",
]

GARBAGE_KINDS: tuple[str, ...] = get_args(GarbageKind)
"""The kinds of bad answer :meth:`TokenServer.respond_with` can give."""

_REDACTED = "<redacted>"
_POST_KINDS = {"password": "post_password", "refresh_token": "post_refresh"}
_HUGE_CHUNK = b"a" * 65536
_OPAQUE_LIMIT = 10_000


@dataclass
class TokenServerCounters:
    """What a :class:`TokenServer` has done since it was made or last reset.

    ``requests`` counts every request to the token endpoint (and to the
    redirect target); the ``get_*``/``post_*`` fields split them by kind.
    ``unauthorized`` counts 401 answers, ``failures_injected`` every answer
    from :meth:`~TokenServer.fail_next`, :meth:`~TokenServer.respond_with` or
    ``failure_rate``. ``in_flight``/``max_in_flight`` count concurrent
    requests, so a test can prove that fetches were shared or parallel.
    """

    requests: int = 0
    get_basic: int = 0
    get_anonymous: int = 0
    post_password: int = 0
    post_refresh: int = 0
    post_other: int = 0
    post_rejected_404: int = 0
    post_rejected_405: int = 0
    redirects_followed: int = 0
    unauthorized: int = 0
    failures_injected: int = 0
    tokens_issued: int = 0
    refresh_tokens_issued: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


@dataclass
class TokenRequest:
    """One request the token server received.

    ``query`` and ``form`` are copies of the request's parameters; a
    ``password`` in the form is replaced by ``"<redacted>"``, and ``form`` is
    left out of the repr because it may hold a refresh token. ``username`` is
    the name from Basic credentials or the password grant, ``subject`` the
    identity the request was served as (``None``: anonymous or refused).
    ``scopes`` lists every scope item asked for, split on spaces. ``status``
    is the status answered, 0 while unanswered or when the connection was
    dropped.
    """

    method: str
    path: str
    kind: str
    query: MultiDict[str]
    form: MultiDict[str] = field(repr=False)
    username: str | None
    scopes: tuple[str, ...]
    subject: str | None = None
    status: int = 0


@dataclass(frozen=True)
class _Failure:
    status: int
    body: bytes
    retry_after: str | None


def _parse_basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else ("", "")


def _split_scopes(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(item for value in values for item in value.split())


def _parse_scope_item(item: str) -> tuple[str, str, list[str]] | None:
    # The name between the type and the actions may hold colons (host:port/repo).
    resource_type, sep, rest = item.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not (sep and sep2 and resource_type and name):
        return None
    return resource_type, name, list(dict.fromkeys(a for a in actions.split(",") if a))


def _now_rfc3339() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenServer(LoopbackServer):
    """A distribution token server on ``127.0.0.1``, for tests.

    ``async with TokenServer(users={"alice": "pw"}) as ts:`` starts it;
    :attr:`realm` is its token endpoint, :attr:`service` the service name a
    registry should announce, :attr:`issuer` the :class:`TokenIssuer` a
    registry should verify with. Every keyword argument is also an attribute
    that may be changed while it runs:

    * ``users``: name -> password for Basic credentials and the password grant.
    * ``grants``: see :data:`Grants`. ``None`` (the default): an authenticated
      user gets every action asked for, anonymous gets ``pull`` on everything.
    * ``picky``: answer 401 when a request asks for more than the subject is
      granted, instead of granting the subset (the spec's behaviour).
    * ``expires_in``: seconds the token lives; ``None`` leaves ``expires_in``
      out of the response and makes a 60 s token, the spec's default.
    * ``support_post``: when false, ``POST`` answers ``post_unsupported_status``
      (404, or 405 as GHCR does).
    * ``rotate_refresh_tokens``: each refresh grant returns a new refresh token
      and invalidates the old one.
    * ``token_field``: send the token as ``token``, ``access_token`` or both.
    * ``check_service``: a ``service`` parameter naming another service gets 400.
    * ``latency``: seconds each token request waits before it is answered.
    * ``failure_rate``: fraction of requests answered ``failure_status``,
      drawn from a ``random.Random(seed)``.
    * ``path``: where the token endpoint is (``/token``; ``/oauth2/token`` on
      ACR, ``/jwt/auth`` on GitLab, ...).
    * ``scope_reading``: ``"last"`` or ``"first"`` reads only one of several
      ``scope`` parameters, as older GitLab (estesp/manifest-tool#53), Harbor
      (goharbor/harbor#2411) and Portus (SUSE/Portus#735) did.
    * ``opaque_tokens``: random tokens instead of JWTs (GHCR's are not JWTs),
      so a client cannot read what a token grants; :meth:`verify` knows them.
    * ``remember_tokens``: keep every token issued in :attr:`issued`, so an
      audit can tell whose a token is even after :meth:`revoke_opaque_tokens`
      or a new :attr:`issuer` made the registry refuse it.
    * ``ssl_context`` and ``tap``: see :class:`~aociauth.testing._http.LoopbackServer`.
    """

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        grants: Grants | None = None,
        service: str = "aociauth-test-registry",
        issuer: TokenIssuer | None = None,
        algorithm: Algorithm = "ES256",
        expires_in: int | None = 300,
        picky: bool = False,
        support_post: bool = True,
        post_unsupported_status: int = 404,
        rotate_refresh_tokens: bool = False,
        token_field: TokenField = "both",  # noqa: S107 (a field name, not a secret)
        check_service: bool = True,
        latency: float = 0.0,
        failure_rate: float = 0.0,
        failure_status: int = 503,
        seed: int = 0,
        path: str = "/token",
        scope_reading: ScopeReading = "all",
        opaque_tokens: bool = False,
        remember_tokens: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        tap: list[Exchange] | None = None,
    ) -> None:
        super().__init__(ssl_context=ssl_context, tap=tap)
        if not path.startswith("/"):
            raise ValueError(f"token path {path!r} must start with /")
        self.path = path
        self.scope_reading: ScopeReading = scope_reading
        self.opaque_tokens = opaque_tokens
        self._opaque: dict[str, tuple[float, dict[str, Any]]] = {}
        self.remember_tokens = remember_tokens
        self.issued: set[str] = set()
        """Every token issued, when ``remember_tokens`` is on."""
        self.issuer = (
            issuer if issuer is not None else TokenIssuer(service=service, algorithm=algorithm)
        )
        self.users: dict[str, str] = dict(users or {})
        self.grants = grants
        self.expires_in = expires_in
        self.picky = picky
        self.support_post = support_post
        self.post_unsupported_status = post_unsupported_status
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.token_field: TokenField = token_field
        self.check_service = check_service
        self.latency = latency
        self.failure_rate = failure_rate
        self.failure_status = failure_status
        self.huge_size = 50 * 1024 * 1024
        """Bytes of the ``"huge"`` answer."""
        self.refresh_tokens: dict[str, str] = {}
        """The refresh tokens that are valid now: token -> subject."""
        self.counters = TokenServerCounters()
        self.requests: list[TokenRequest] = []
        # Seeded so that a failure pattern repeats from run to run.
        self._random = random.Random(seed)  # noqa: S311
        self._failures: collections.deque[_Failure] = collections.deque()
        self._garbage: collections.deque[tuple[str, str | None]] = collections.deque()

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"TokenServer({where}, service={self.service!r})"

    @property
    def service(self) -> str:
        """The service name tokens are issued for (the ``aud`` claim)."""
        return self.issuer.service

    @property
    def realm(self) -> str:
        """The token endpoint URL, for a registry's ``realm``."""
        return f"{self.url}{self.path}"

    def verify(self, token: str, *, leeway: float = 60.0) -> dict[str, Any]:
        """The claims of a token this server issued and that is still valid; else ValueError.

        JWTs are checked with :attr:`issuer`; opaque tokens are looked up.
        """
        if not self.opaque_tokens:
            return self.issuer.verify(token, leeway=leeway)
        found = self._opaque.get(token)
        if found is None or found[0] + leeway < time.time():
            raise ValueError("unknown or expired opaque token")
        return found[1]

    def revoke_opaque_tokens(self) -> None:
        """Forget every opaque token issued so far: the registry refuses them from now on."""
        self._opaque.clear()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer a token request that arrived elsewhere: a registry serving the token
        endpoint on its own host (GHCR, ACR, Quay, ...) hands its requests here."""
        return await self._handle(request, follow_garbage=True)

    def reset_counters(self) -> None:
        """Zero :attr:`counters` and forget :attr:`requests`."""
        in_flight = self.counters.in_flight
        self.counters = TokenServerCounters(in_flight=in_flight, max_in_flight=in_flight)
        self.requests.clear()
        self._arrivals = 0

    def issue_refresh_token(self, subject: str) -> str:
        """Make a refresh token for ``subject`` that the refresh grant accepts.

        Handy for a config entry's ``identitytoken``.
        """
        token = secrets.token_urlsafe(24)
        self.refresh_tokens[token] = subject
        self.counters.refresh_tokens_issued += 1
        return token

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        body: bytes | str = b"injected failure\n",
        retry_after: float | str | None = None,
    ) -> None:
        """Answer the next ``n`` token requests with ``status`` and ``body``.

        ``retry_after`` (seconds or an HTTP date) is sent as ``Retry-After``.
        """
        raw = body.encode() if isinstance(body, str) else body
        after = None if retry_after is None else str(retry_after)
        self._failures.extend(_Failure(status, raw, after) for _ in range(n))

    def respond_with(self, kind: str, n: int = 1, *, location: str | None = None) -> None:
        """Answer the next ``n`` token requests with a bad answer of ``kind``.

        ``kind`` is one of :data:`GARBAGE_KINDS`: ``"html"`` (a login page),
        ``"empty"``, ``"not_json"``, ``"json_array"`` (a token inside a list),
        ``"no_token"`` (a JSON object without one), ``"huge"`` (a streamed
        :attr:`huge_size`-byte body), ``"redirect"`` (302 to ``location``,
        by default this server's ``/token-redirected``, which hands out real
        tokens and counts ``redirects_followed``), ``"slow_body"`` (headers,
        a few bytes, then nothing until the server stops), ``"drop"`` (the
        connection is closed unanswered) or ``"bad_token_chars"`` (a token
        holding CR, LF and spaces).
        """
        if kind not in GARBAGE_KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {GARBAGE_KINDS}")
        self._garbage.extend((kind, location) for _ in range(n))

    def clear_failures(self) -> None:
        """Forget every queued :meth:`fail_next` and :meth:`respond_with`."""
        self._failures.clear()
        self._garbage.clear()

    def allowed(self, subject: str | None, access: Access) -> bool:
        """Whether ``subject`` (``None``: anonymous) may have ``access``, per :attr:`grants`."""
        grants = self.grants
        if grants is None:
            return subject is not None or access.action == "pull"
        if callable(grants):
            return grants(subject, access)
        target = f"{access.resource_type}:{access.resource}"
        for key in (None,) if subject is None else (subject, None):
            for pattern, actions in grants.get(key, {}).items():
                if access.action in actions and fnmatchcase(target, pattern):
                    return True
        return False

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", self.path, self._handle_token)
        app.router.add_route("*", "/token-redirected", self._handle_redirected)
        return app

    async def _handle_redirected(self, request: web.Request) -> web.StreamResponse:
        self.counters.redirects_followed += 1
        return await self._handle(request, follow_garbage=False)

    async def _handle_token(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, follow_garbage=True)

    async def _handle(self, request: web.Request, *, follow_garbage: bool) -> web.StreamResponse:
        counters = self.counters
        counters.requests += 1
        counters.in_flight += 1
        counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
        self._arrive()
        try:
            record, password = await self._record(request)
            response = await self._answer(request, record, password, follow_garbage=follow_garbage)
            transport = request.transport
            answered = transport is not None and not transport.is_closing()
            record.status = response.status if answered else 0
            if response.status == 401:
                counters.unauthorized += 1
            return response
        finally:
            counters.in_flight -= 1

    async def _record(self, request: web.Request) -> tuple[TokenRequest, str]:
        """Record ``request``; return the record and the posted password (kept out of it)."""
        form: MultiDict[str] = MultiDict()
        password = ""
        if request.method == "POST" and self.support_post:
            posted = await request.post()
            for key, value in posted.items():
                if not isinstance(value, str):
                    continue
                if key == "password":
                    password = value
                    value = _REDACTED
                form.add(key, value)
        basic = _parse_basic(request.headers.get("Authorization", ""))
        username: str | None = None
        scopes: tuple[str, ...] = ()
        if request.method == "GET":
            kind = "get_basic" if basic is not None else "get_anonymous"
            scopes = _split_scopes(self._read_scopes(request.query.getall("scope", [])))
            username = basic[0] if basic is not None else None
        elif request.method == "POST":
            kind = _POST_KINDS.get(form.get("grant_type", ""), "post_other")
            scopes = _split_scopes(self._read_scopes(form.getall("scope", [])))
            username = form.get("username") if kind == "post_password" else None
        else:
            kind = "other"
        record = TokenRequest(
            method=request.method,
            path=request.path,
            kind=kind,
            query=MultiDict(request.query),
            form=form,
            username=username,
            scopes=scopes,
        )
        self.requests.append(record)
        return record, password

    def _read_scopes(self, values: list[str]) -> list[str]:
        # Rails keeps the last of repeated query parameters (older GitLab's /jwt/auth).
        if self.scope_reading == "last":
            return values[-1:]
        if self.scope_reading == "first":
            return values[:1]
        return values

    def _count_kind(self, kind: str) -> None:
        counters = self.counters
        if kind == "get_basic":
            counters.get_basic += 1
        elif kind == "get_anonymous":
            counters.get_anonymous += 1
        elif kind == "post_password":
            counters.post_password += 1
        elif kind == "post_refresh":
            counters.post_refresh += 1
        elif kind == "post_other":
            counters.post_other += 1

    async def _answer(
        self, request: web.Request, record: TokenRequest, password: str, *, follow_garbage: bool
    ) -> web.StreamResponse:
        if request.method == "POST" and not self.support_post:
            return self._reject_post()
        if request.method not in ("GET", "POST"):
            return web.Response(status=405, headers={"Allow": "GET, POST"})
        self._count_kind(record.kind)
        await self._gate()
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        injected = await self._injected(request, follow_garbage=follow_garbage)
        if injected is not None:
            self.counters.failures_injected += 1
            return injected
        if request.method == "POST":
            return self._answer_post(record, password)
        return self._answer_get(request, record)

    def _reject_post(self) -> web.Response:
        status = self.post_unsupported_status
        if status == 405:
            self.counters.post_rejected_405 += 1
            return web.Response(
                status=405, text="405 method not allowed\n", headers={"Allow": "GET"}
            )
        self.counters.post_rejected_404 += 1
        return web.Response(status=status, text="404 page not found\n")

    async def _injected(
        self, request: web.Request, *, follow_garbage: bool
    ) -> web.StreamResponse | None:
        if self._failures:
            failure = self._failures.popleft()
            headers = {} if failure.retry_after is None else {"Retry-After": failure.retry_after}
            return web.Response(status=failure.status, body=failure.body, headers=headers)
        if self._garbage and follow_garbage:
            kind, location = self._garbage.popleft()
            return await self._garbage_response(request, kind, location)
        if self.failure_rate > 0 and self._random.random() < self.failure_rate:
            return web.Response(status=self.failure_status, text="injected failure\n")
        return None

    async def _garbage_response(
        self, request: web.Request, kind: str, location: str | None
    ) -> web.StreamResponse:
        token = self.issuer.issue(subject="", access=[], expires_in=60)
        if kind == "html":
            page = "<!DOCTYPE html><html><body><form>Sign in</form></body></html>\n"
            return web.Response(text=page, content_type="text/html")
        if kind == "empty":
            return web.Response(body=b"", content_type="application/json")
        if kind == "not_json":
            return web.Response(text=f"token={token}\n", content_type="application/json")
        if kind == "json_array":
            return json_response([{"token": token, "expires_in": 60}])
        if kind == "no_token":
            return json_response({"expires_in": 60, "issued_at": _now_rfc3339()})
        if kind == "bad_token_chars":
            bad = f"{token[:20]} {token[20:40]}\r\nX-Injected: yes\r\n{token[40:]}"
            return json_response({"token": bad, "access_token": bad, "expires_in": 60})
        if kind == "redirect":
            target = location or f"{self.url}/token-redirected?{request.query_string}"
            return web.Response(status=302, headers={"Location": target})
        if kind == "drop":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        if kind == "huge":
            return await self._stream_huge(request)
        return await self._stall(request)

    async def _stream_huge(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = self.huge_size
        try:
            await response.prepare(request)
            head = b'{"token":"'
            await response.write(head)
            remaining = self.huge_size - len(head)
            while remaining > 0 and not self._closing.is_set():
                chunk = _HUGE_CHUNK[: min(remaining, len(_HUGE_CHUNK))]
                await response.write(chunk)
                remaining -= len(chunk)
        except ConnectionError:
            pass
        return response

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        try:
            await response.prepare(request)
            await response.write(b'{"tok')
        except ConnectionError:
            return response
        await self._closing.wait()
        if request.transport is not None:
            request.transport.close()
        return response

    def _unauthorized(self, message: str) -> web.Response:
        return json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": message, "detail": None}]},
            status=401,
        )

    def _bad_request(self, error: str, description: str) -> web.Response:
        return json_response({"error": error, "error_description": description}, status=400)

    def _service_mismatch(self, service: str | None) -> web.Response | None:
        if self.check_service and service is not None and service != self.service:
            return self._bad_request("invalid_request", f"unknown service {service!r}")
        return None

    def _check_password(self, username: str, password: str) -> bool:
        expected = self.users.get(username)
        return expected is not None and hmac.compare_digest(
            expected.encode("utf-8"), password.encode("utf-8")
        )

    def _answer_get(self, request: web.Request, record: TokenRequest) -> web.Response:
        mismatch = self._service_mismatch(request.query.get("service"))
        if mismatch is not None:
            return mismatch
        subject: str | None = None
        basic = _parse_basic(request.headers.get("Authorization", ""))
        if basic is not None:
            if not self._check_password(*basic):
                return self._unauthorized("incorrect username or password")
            subject = basic[0]
        offline = (
            request.query.get("offline_token", "").lower() == "true"
            and bool(request.query.get("client_id"))
            and subject is not None
        )
        return self._grant(record, subject, refresh=offline, oauth=False)

    def _answer_post(self, record: TokenRequest, password: str) -> web.Response:
        form = record.form
        mismatch = self._service_mismatch(form.get("service"))
        if mismatch is not None:
            return mismatch
        if not form.get("client_id"):
            return self._bad_request("invalid_request", "client_id is required")
        if record.kind == "post_password":
            username = form.get("username", "")
            if not self._check_password(username, password):
                return self._unauthorized("incorrect username or password")
            offline = form.get("access_type") == "offline"
            return self._grant(record, username, refresh=offline, oauth=True)
        if record.kind == "post_refresh":
            old = form.get("refresh_token", "")
            subject = self.refresh_tokens.get(old)
            if subject is None:
                return self._unauthorized("invalid refresh token")
            if self.rotate_refresh_tokens:
                del self.refresh_tokens[old]
            return self._grant(record, subject, refresh=self.rotate_refresh_tokens, oauth=True)
        return self._bad_request("unsupported_grant_type", "grant_type is not supported")

    def _grant(
        self, record: TokenRequest, subject: str | None, *, refresh: bool, oauth: bool
    ) -> web.Response:
        access, refused = self._granted_access(subject, record.scopes)
        if refused and self.picky:
            return self._unauthorized("requested access to the resource is denied")
        record.subject = subject
        lifetime = self.expires_in if self.expires_in else 60
        claim = [{"type": t, "name": n, "actions": actions} for t, n, actions in access]
        if self.opaque_tokens:
            token = secrets.token_urlsafe(32)
            claims = {"sub": subject or "", "access": claim}
            if len(self._opaque) >= _OPAQUE_LIMIT:
                now = time.time()
                self._opaque = {k: v for k, v in self._opaque.items() if v[0] > now}
            self._opaque[token] = (time.time() + lifetime, claims)
        else:
            token = self.issuer.issue(subject=subject or "", access=claim, expires_in=lifetime)
        if self.remember_tokens:
            self.issued.add(token)
        self.counters.tokens_issued += 1
        body: dict[str, object] = {}
        if self.token_field in ("both", "token"):
            body["token"] = token
        if self.token_field in ("both", "access_token"):
            body["access_token"] = token
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        body["issued_at"] = _now_rfc3339()
        if refresh and subject is not None:
            body["refresh_token"] = self.issue_refresh_token(subject)
        if oauth:
            body["scope"] = " ".join(f"{t}:{n}:{','.join(a)}" for t, n, a in access)
        return json_response(body)

    def _granted_access(
        self, subject: str | None, scopes: Sequence[str]
    ) -> tuple[list[tuple[str, str, list[str]]], bool]:
        """Return the (type, name, actions) granted for ``scopes`` and whether any was refused."""
        granted: dict[tuple[str, str], list[str]] = {}
        refused = False
        for item in scopes:
            parsed = _parse_scope_item(item)
            if parsed is None:
                continue
            resource_type, name, actions = parsed
            kept = granted.setdefault((resource_type, name), [])
            for action in actions:
                if not self.allowed(subject, Access(resource_type, name, action)):
                    refused = True
                elif action not in kept:
                    kept.append(action)
        access = [(t, n, actions) for (t, n), actions in granted.items() if actions]
        return access, refused
