"""The httpx adapter: :class:`RegistryAuth`, an ``httpx.Auth`` that drives the same core.

``httpx.AsyncClient(auth=RegistryAuth(params))`` authorises requests to
Docker/OCI registries exactly as the aiohttp middleware does: the decisions
are :mod:`aociauth.core`'s, the credential memo, fetch runner and retry loop
are :mod:`aociauth._driver`'s, and only the HTTP exchanges are httpx's. It
runs under asyncio and trio (anyio only; no asyncio here).

How it meets httpx:

* An auth flow cannot hand back another response than the last one httpx
  got, so the 403 DENIED rewrite changes that response in place (status,
  headers and body; the registry's 401 body is read first).
* httpx follows redirects inside one step of the flow: a redirect hop never
  meets this flow, and httpx itself drops ``Authorization`` when a redirect
  leaves the origin (``Client._redirect_headers``). The flow judges the
  answer of the request's own origin (the last hop on it).
* Our credential is taken out of the request once the flow ends, so
  ``response.request.headers`` (and a ``next_request`` built from it) shows
  what the caller set, never our token or password.
* Token requests go through ``client`` (or a client this auth owns): built
  as bare ``httpx.Request`` objects (none of the client's cookies, headers
  or base URL), sent without auth and without following redirects, bounded
  by ``token_timeout`` (all of it, body included) and ``max_token_response``
  (decoded bytes). A cookie a token server sets is forgotten again.
* The realm address check: httpx has no resolver hook, so the owned client
  uses a transport that resolves the realm's name with
  :func:`anyio.getaddrinfo`, refuses forbidden addresses
  (:func:`aociauth._resolver.refused_address`) and connects to the address
  it judged (TLS still verifies the name), so a second lookup cannot answer
  otherwise. A client of your own is yours to guard.
* Concurrent fetches of one token are one fetch. On asyncio it runs in a
  task this auth owns (cancelled by :meth:`RegistryAuth.aclose`); on trio,
  where no task may outlive its caller, the first caller runs it and a
  waiter takes over if that caller is cancelled. A refresh ahead of expiry
  runs in the background on asyncio; on trio it runs in the request that
  found it due (which waits for it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncGenerator, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from yarl import URL

from aociauth._capped import collect_capped, declared_length
from aociauth._driver import (
    Credentials,
    EntryKey,
    FetchLocks,
    SharedTier,
    fetch_token,
    retrying_token_call,
)
from aociauth._redact import redact_url
from aociauth._resolver import RealmAddressError, loopback_allowed, refused_address
from aociauth._responses import denied_body
from aociauth._singleflight import SingleFlight
from aociauth._urls import parse_retry_after
from aociauth.config import NamespacedConfig
from aociauth.context import scopes_from_context
from aociauth.core import (
    AuthCore,
    AwaitProbe,
    Deny,
    Fail,
    FetchJob,
    FetchKey,
    FetchToken,
    LookupAnswer,
    LookupCredentials,
    PrepareResend,
    RefreshInBackground,
    Reply,
    RequestFacts,
    Resend,
    Send,
    TokenCall,
    TokenReply,
)
from aociauth.errors import (
    AuthRequestError,
    BodyNotReplayableError,
    OCIAuthError,
    RealmPolicyError,
    TokenServerError,
)
from aociauth.params import StdTransportParams
from aociauth.scope import Scope
from aociauth.stats import AuthStats
from aociauth.tokens import AccessToken

if TYPE_CHECKING:
    from aociauth._aiotasks import TaskSet

__all__ = ["RegistryAuth"]

log = logging.getLogger("aociauth")

#: Response headers that describe the registry's own body, not the DENIED one.
_BODY_HEADERS = frozenset(
    {"www-authenticate", "content-length", "content-type", "content-encoding", "transfer-encoding"}
)


def _async_library() -> str:
    try:
        import sniffio
    except ImportError:  # trio needs sniffio, so without it this is asyncio
        return "asyncio"
    return sniffio.current_async_library()


class RegistryAuth(httpx.Auth):
    """An ``httpx.Auth`` for Docker/OCI registries: ``httpx.AsyncClient(auth=RegistryAuth())``.

    ``params`` are the middleware's (``params.session`` is for aiohttp only);
    token requests go through ``client``, or an ``httpx.AsyncClient`` this
    auth owns when it is None. Use it as an async context manager (or
    ``await auth.aclose()``) to release what it owns. ``stats`` counts what
    it did, as the middleware's. One auth belongs to one event loop; it
    works with ``httpx.AsyncClient`` only.
    """

    def __init__(
        self, params: StdTransportParams | None = None, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self._p = params or StdTransportParams()
        self.stats = AuthStats()
        self._core = AuthCore(self._p.flow_policy(), self.stats)
        if isinstance(self._p.config, NamespacedConfig):
            self._core.set_namespaces(self._p.config.namespaces)
        self._client = client
        self._owned: httpx.AsyncClient | None = None
        #: Set on first use: the async library, and the background tasks (asyncio only).
        self._library: str | None = None
        self._tasks: TaskSet | None = None
        self._fetches: SingleFlight[FetchKey, AccessToken | OCIAuthError] | None = None
        self._credentials: Credentials | None = None
        self._probes: dict[URL, anyio.Event] = {}
        self._locks = FetchLocks()
        self._closed = False
        store = self._p.shared_cache
        self._shared = None if store is None else SharedTier(store, self.stats)

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> RegistryAuth:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel background work and close the client this auth owns.

        Requests waiting on a shared fetch end with :class:`AuthRequestError`.
        """
        self._closed = True
        if self._tasks is not None:
            await self._tasks.cancel()
        for ev in self._probes.values():
            ev.set()
        if self._owned is not None:
            await self._owned.aclose()
            self._owned = None

    def _closed_error(self) -> AuthRequestError:
        return AuthRequestError("the registry auth is closed", step="closed")

    def _bind(self) -> None:
        """Choose, on first use, how shared work runs: in owned tasks (asyncio) or inline."""
        library = _async_library()
        if self._library is not None:
            if library != self._library:
                raise AuthRequestError(
                    f"this RegistryAuth runs on {self._library}, not {library}", step="loop"
                )
            return
        spawn = None
        if library == "asyncio":
            from aociauth._aiotasks import TaskSet

            self._tasks = TaskSet()
            spawn = self._tasks.spawn
        self._library = library
        self._fetches = SingleFlight(
            spawn=spawn, abandoned=self._closed_error, on_end=self._core.fetch_ended
        )
        lookups: SingleFlight[EntryKey, LookupAnswer] = SingleFlight(
            spawn=spawn, abandoned=self._closed_error
        )
        self._credentials = Credentials(
            self._p.config,
            self.stats,
            lookups,
            self._core.policy.max_origins,
            check_interval=self._p.config_check_interval,
            on_change=self._core.forget_credentials,
        )

    def cached_token(self, url: str | URL, scope: Scope | None = None) -> AccessToken | None:
        """A cached, still usable token for the registry at ``url`` holding ``scope``."""
        return self._core.cached_token(URL(str(url)), scope or Scope(), anyio.current_time())

    # -- the auth flow -----------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        """Refused: token fetches are asynchronous; use ``httpx.AsyncClient``."""
        raise AuthRequestError(
            "RegistryAuth works with httpx.AsyncClient, not httpx.Client", step="client"
        )
        yield request  # pragma: no cover (makes this a generator, as httpx expects)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Authorise ``request``, send it, and answer one usable 401 challenge."""
        if self._closed:
            raise self._closed_error()
        self._bind()
        assert self._credentials is not None
        self._credentials.watch(anyio.current_time())
        callers = request.headers.get_list("Authorization")
        info_scope, wanted = scopes_from_context()
        facts = RequestFacts(
            method=request.method,
            url=URL(str(request.url), encoded=True),
            info_scope=info_scope,
            wanted=wanted,
            callers_authorization=bool(callers),
        )
        flow = self._core.request_flow(facts)
        response: httpx.Response | None = None
        value: Any = None
        try:
            while True:
                try:
                    effect = self._core.resume(flow, value, anyio.current_time())
                except StopIteration as stop:
                    outcome = stop.value
                    break
                if isinstance(effect, Send):
                    if effect.authorization is not None:
                        request.headers["Authorization"] = effect.authorization
                    try:
                        response = yield request
                        if effect.probe and response.status_code == 401:
                            # Read before the waiters wake, not at PrepareResend: they
                            # must find this request's token fetch under way, to join it
                            # or be coalesced into it, as in the aiohttp adapter.
                            await response.aread()
                    finally:
                        if effect.probe:
                            self._probe_ended(request)
                    value = _reply(request, response)
                elif isinstance(effect, Resend):
                    request.headers["Authorization"] = effect.authorization
                    response = yield request
                    value = _reply(request, response)
                elif isinstance(effect, PrepareResend):
                    assert response is not None
                    _check_replayable(request)
                    # httpx reads every intermediate response anyway; reading it now
                    # frees its connection before the token fetch.
                    await response.aread()
                    value = None
                else:
                    value = await self._perform(effect)
            if isinstance(outcome, Fail):
                raise outcome.error
            if isinstance(outcome, Deny):
                assert response is not None
                await _deny(request, response, denied_body(outcome))
        finally:
            flow.close()
            _restore_authorization(request, response, callers)

    def _probe_ended(self, request: httpx.Request) -> None:
        origin = URL(str(request.url), encoded=True).origin()
        self._core.probe_ended(origin)
        ev = self._probes.pop(origin, None)
        if ev is not None:
            ev.set()

    async def _perform(self, effect: object) -> Any:
        assert self._credentials is not None
        assert self._fetches is not None
        if isinstance(effect, LookupCredentials):
            return await self._credentials.entry(effect)
        if isinstance(effect, AwaitProbe):
            ev = self._probes.setdefault(effect.origin, anyio.Event())
            await ev.wait()
            if self._closed:
                raise self._closed_error()
            return None
        if isinstance(effect, FetchToken):
            job = effect.job
            return await self._fetches.run(effect.key, lambda: self._fetch(job))
        if isinstance(effect, RefreshInBackground):
            if self._tasks is not None:
                self._tasks.spawn(self._refresh(effect.key, effect.job))
            else:
                await self._refresh(effect.key, effect.job)
            return None
        raise TypeError(f"unknown effect {effect!r}")  # pragma: no cover

    # -- token fetches -----------------------------------------------------

    async def _fetch(self, job: FetchJob) -> AccessToken | OCIAuthError:
        lock: contextlib.AbstractAsyncContextManager[Any] = contextlib.nullcontext()
        if self._p.serialize_token_fetches:
            lock = self._locks.hold(job.origin.url)
        async with lock:
            return await fetch_token(self._core, job, self._token_call, self._shared)

    async def _refresh(self, key: FetchKey, job: FetchJob) -> None:
        try:
            got = await self._fetch(job)
        finally:
            self._core.fetch_ended(key)
        if isinstance(got, OCIAuthError):
            log.debug("refresh ahead for %s failed: %s", job.origin.host, got)

    async def _token_call(self, call: TokenCall) -> TokenReply:
        return await retrying_token_call(call, self._p, self.stats, self._exchange)

    def _token_client(self) -> httpx.AsyncClient:
        if self._client is not None:
            return self._client
        if self._closed:
            raise self._closed_error()
        if self._owned is None:
            transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
            if not self._p.realm_policy.allow_private_realms:
                transport = _RealmGuardTransport(transport)
            # No proxies from the environment: a proxy would resolve the realm itself,
            # past the address check (aiohttp's sessions do not read them either).
            self._owned = httpx.AsyncClient(transport=transport, trust_env=False)
        return self._owned

    async def _exchange(
        self, call: TokenCall, headers: dict[str, str], where: str
    ) -> tuple[TokenReply, float | None]:
        """One attempt: the reply, and the server's Retry-After (seconds) when it gave one."""
        local = loopback_allowed.set(call.loopback_ok)
        status: int | None = None
        try:
            client = self._token_client()
            req = httpx.Request(
                call.method,
                str(call.url),
                headers=headers,
                data=dict(call.form) if call.form is not None else None,
                extensions={"timeout": httpx.Timeout(self._p.token_timeout).as_dict()},
            )
            with anyio.fail_after(self._p.token_timeout):
                resp = await client.send(req, stream=True, auth=None, follow_redirects=False)
                try:
                    status = resp.status_code
                    if status == 200:
                        body = await _read_capped(resp, self._p.max_token_response, where, call)
                        return TokenReply(200, body), None
                    wait = parse_retry_after(
                        resp.headers.get("Retry-After"), self._p.retry_max_wait, time.time()
                    )
                    return TokenReply(status), wait
                finally:
                    await resp.aclose()
                    _forget_cookies(client, resp)
        except OCIAuthError as exc:
            return TokenReply(status, error=exc), None
        except RealmAddressError as exc:
            error: OCIAuthError = RealmPolicyError(
                f"refusing token request for {call.registry}: {exc}",
                registry=call.registry,
                step="realm",
            )
            return TokenReply(None, error=error), None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError) as exc:
            # OSError covers anyio's TimeoutError from fail_after.
            error = TokenServerError(
                f"{where} could not be reached: {type(exc).__name__}",
                registry=call.registry,
                step="token",
                status=status,
            )
            return TokenReply(None, error=error), None
        finally:
            loopback_allowed.reset(local)


# -- helpers -------------------------------------------------------------------


def _reply(request: httpx.Request, response: httpx.Response) -> Reply:
    """The answer of the request's own origin: the response, or (after httpx followed
    a redirect away) the last hop that was still on the request's origin."""
    origin = _origin(request.url)
    own = response
    for hop in (response, *reversed(response.history)):
        if _origin(hop.request.url) == origin:
            own = hop
            break
    return Reply(own.status_code, tuple(own.headers.get_list("WWW-Authenticate")))


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def _check_replayable(request: httpx.Request) -> None:
    # httpx refuses to send a consumed generator body again (StreamConsumed), after
    # the 401 and the token fetch; refuse first, with the error the middleware gives.
    stream = request.stream
    if getattr(stream, "_is_stream_consumed", False) and getattr(stream, "_is_generator", False):
        raise BodyNotReplayableError(
            f"{request.method} {redact_url(URL(str(request.url), encoded=True))} was answered "
            "401 and its streaming body cannot be sent again; authorise first (for example "
            "with a request that has no body, or with_scope before streaming)",
            registry=request.url.host,
            step="retry",
            status=401,
        )


async def _deny(request: httpx.Request, response: httpx.Response, body: bytes) -> None:
    """The original's rule (a 401 right after a token the server just gave us means
    403 DENIED, with ``body``), applied to ``response`` itself: httpx returns the flow's
    last response."""
    await response.aread()
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _BODY_HEADERS]
    headers.append(("Content-Type", "application/json"))
    denied = httpx.Response(403, headers=headers, content=body, request=request)
    response.status_code = denied.status_code
    response.headers = denied.headers
    response.stream = denied.stream
    response._content = body
    response.is_stream_consumed = False
    response.is_closed = False
    for stale in ("_decoder", "_text"):
        response.__dict__.pop(stale, None)


def _restore_authorization(
    request: httpx.Request, response: httpx.Response | None, callers: list[str]
) -> None:
    """Put back the caller's Authorization, in the request and in a redirect built from it."""
    targets = [request]
    if response is not None and response.next_request is not None:
        targets.append(response.next_request)
    for req in targets:
        if req.headers.get_list("Authorization") == callers:
            continue
        items = [(k, v) for k, v in req.headers.multi_items() if k.lower() != "authorization"]
        if req is request or _origin(req.url) == _origin(request.url):
            items += [("Authorization", v) for v in callers]
        req.headers = httpx.Headers(items)


async def _read_capped(resp: httpx.Response, cap: int, where: str, call: TokenCall) -> bytes:
    """The (decoded) body, or an error once it passes ``cap`` bytes."""

    def too_big() -> TokenServerError:
        return TokenServerError(
            f"{where} sent a body larger than {cap} bytes",
            registry=call.registry,
            step="token",
            status=resp.status_code,
        )

    declared = declared_length(resp.headers.get("Content-Length"))
    return await collect_capped(resp.aiter_bytes(), cap, declared, too_big)


def _forget_cookies(client: httpx.AsyncClient, resp: httpx.Response) -> None:
    """Take the cookies a token server set out of the client's jar again (token requests
    are built bare, so no jar's cookie goes with one; this keeps none for anyone else)."""
    if "set-cookie" not in resp.headers:
        return
    got = httpx.Cookies()
    got.extract_cookies(resp)
    for c in got.jar:
        with contextlib.suppress(KeyError):
            client.cookies.jar.clear(c.domain, c.path, c.name)


class _RealmGuardTransport(httpx.AsyncBaseTransport):
    """Resolve a realm's name, refuse forbidden addresses, and connect to the address judged."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to an address of its host judged fit, or raise RealmAddressError."""
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        loopback_ok = loopback_allowed.get()
        addresses: list[str] = []
        for info in infos:
            address = str(info[4][0])
            why = refused_address(ipaddress.ip_address(address), loopback_ok=loopback_ok)
            if why:
                raise RealmAddressError(host, why)
            if address not in addresses:
                addresses.append(address)
        if request.url.scheme == "https":
            # TLS still checks the certificate against the name.
            request.extensions = {**request.extensions, "sni_hostname": host}
        failure: httpx.ConnectError | None = None
        for address in addresses:  # in the resolver's order, as a connect would try them
            try:
                return await self._inner.handle_async_request(
                    _to_address(request, address) if address != host else request
                )
            except httpx.ConnectError as exc:
                failure = exc
        raise failure or httpx.ConnectError(f"{host} has no address", request=request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _to_address(request: httpx.Request, address: str) -> httpx.Request:
    """``request`` sent to ``address``; its Host header still names the host."""
    return httpx.Request(
        request.method,
        request.url.copy_with(host=address),
        headers=request.headers,
        stream=request.stream,
        extensions=request.extensions,
    )
