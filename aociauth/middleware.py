"""The aiohttp client middleware: drives the I/O-free core (:mod:`aociauth.core`).

``new_std_transport(params)`` returns an :class:`AuthMiddleware`; put it in
``aiohttp.ClientSession(middlewares=[mw])``. Every decision (which
credentials go with a request, what a 401 means, which token request to
make) is the core's; this module performs the effects the core asks for:
it looks credentials up, sends requests, runs token requests with bounded
time, size and retries, and shares concurrent fetches and lookups of one key
(:class:`~aociauth._singleflight.SingleFlight`). No lock is held across I/O
unless ``serialize_token_fetches`` asks for the original's per-registry lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import ClientRequest, ClientResponse, hdrs
from yarl import URL

from aociauth._addresses import TrustDecision
from aociauth._driver import (
    Credentials,
    EntryKey,
    FetchLocks,
    SharedTier,
    fetch_token,
    retrying_token_call,
)
from aociauth._redact import redact_url
from aociauth._resolver import RealmAddressError
from aociauth._responses import (
    _followed,
    denied_body,
    hide_followed_redirect,
    hide_presigned,
    is_presigned,
    note_redirect,
    read_capped,
    rewrite_403,
)
from aociauth._singleflight import SingleFlight
from aociauth._token_sessions import TokenSessions
from aociauth._urls import parse_retry_after
from aociauth.config import NamespacedConfig
from aociauth.context import _request_info_var, _scope_var
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
    Outcome,
    Prepared,
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
from aociauth.params import AuthStats, StdTransportParams
from aociauth.scope import EMPTY_SCOPE, Scope
from aociauth.tokens import AccessToken

__all__ = ["AuthMiddleware", "AuthStats", "StdTransportParams", "new_std_transport"]

log = logging.getLogger("aociauth")

Handler = Callable[[ClientRequest], Awaitable[ClientResponse]]
_tuple_new = tuple.__new__
_monotonic = time.monotonic
_STDLIB_LOOP_TIME = asyncio.BaseEventLoop.time


class AuthMiddleware:
    """An aiohttp client middleware that authorises requests to Docker/OCI registries.

    Use it as ``aiohttp.ClientSession(middlewares=[mw])`` and as an async
    context manager (or ``await mw.close()``) so the background work and the
    session it owns are released. One instance keeps the token cache for
    every registry it meets; share it between sessions for the same identity.
    A request through a closed middleware fails with :class:`AuthRequestError`
    (step ``"closed"``) before anything is sent.
    """

    def __init__(self, params: StdTransportParams | None = None) -> None:
        self._p = params or StdTransportParams()
        self._config = self._p.config
        self.stats = AuthStats()
        self._core = AuthCore(self._p.flow_policy(), self.stats)
        if isinstance(self._config, NamespacedConfig):
            self._core.set_namespaces(self._config.namespaces)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fetches: SingleFlight[FetchKey, AccessToken | OCIAuthError] = SingleFlight(
            spawn=self._spawn, abandoned=self._closed_error, on_end=self._core.fetch_ended
        )
        lookups: SingleFlight[EntryKey, LookupAnswer] = SingleFlight(
            spawn=self._spawn, abandoned=self._closed_error
        )
        self._credentials = Credentials(
            self._config,
            self.stats,
            lookups,
            self._core.policy.max_origins,
            check_interval=self._p.config_check_interval,
            on_change=self._core.forget_credentials,
        )
        self._probes: dict[URL, asyncio.Event] = {}
        self._locks = FetchLocks()
        self._sessions = TokenSessions()
        self._closed = False
        store = self._p.shared_cache
        self._shared = None if store is None else SharedTier(store, self.stats)

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> AuthMiddleware:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel background refreshes and shared fetches; close the session the middleware owns.

        Requests waiting on a shared fetch end with :class:`AuthRequestError`.
        """
        self._closed = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        for ev in self._probes.values():
            ev.set()
        await self._sessions.close()

    def _closed_error(self) -> AuthRequestError:
        return AuthRequestError("the auth middleware is closed", step="closed")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _token_session(self, call: TokenCall) -> aiohttp.ClientSession:
        """The session for ``call``: the caller's own, or ours for the call's trust decision.

        Ours are one pool per trust decision (:mod:`aociauth._token_sessions`): a
        keep-alive connection made where loopback was allowed never carries a request
        judged without it, and no cookie won from one realm rides to another.
        """
        if self._p.session is not None:
            return self._p.session
        if self._closed:
            raise self._closed_error()
        if self._p.realm_policy.allow_private_realms:
            trust = TrustDecision(unrestricted=True)
        else:
            trust = TrustDecision(loopback=call.loopback_ok, private=True)
        return self._sessions.session_for(trust)

    def cached_token(self, url: str | URL, scope: Scope | None = None) -> AccessToken | None:
        """A cached, still usable token for the registry at ``url`` holding ``scope``.

        For tools that show what the flow obtained (``aociauth token``); the
        token's ``repr`` hides its value. ``scope`` None means any token.
        """
        now = asyncio.get_running_loop().time()
        return self._core.cached_token(URL(str(url)), scope or Scope(), now)

    # -- the middleware ----------------------------------------------------

    async def __call__(self, req: ClientRequest, handler: Handler) -> ClientResponse:
        """Authorise ``req``, send it, and answer one usable 401 challenge."""
        headers = req.headers
        # The fast lane: a plain request (no redirect being followed, no scope or
        # request info of the caller's, no Authorization of its own) that the core
        # decided before. Spelt out, for on this path every call and lookup shows in
        # the client's CPU time (docs/benchmarks.md).
        if (
            _followed.get() is None
            and _request_info_var.get(None) is None
            and _scope_var.get(None) is None
            and hdrs.AUTHORIZATION not in headers
            and not self._closed
        ):
            loop = req.loop
            # The loop's own clock, read without a Python call where it is the stdlib's.
            now = _monotonic() if type(loop).time is _STDLIB_LOOP_TIME else loop.time()
            url = req.url
            core = self._core
            hit = core.hit(req.method, url, now)
            if hit is not None:
                headers[hdrs.AUTHORIZATION] = hit.authorization
                try:
                    resp = await handler(req)
                    status = resp.status
                    if status == 401 or status == 429:
                        facts = RequestFacts(req.method, url, None, EMPTY_SCOPE, False)
                        prep = core.prepared(hit, facts, now)
                        resp = await self._answer(req, handler, prep, resp)
                finally:
                    # As below: aiohttp's request_info is a view of these headers.
                    headers.popall(hdrs.AUTHORIZATION, None)
                if resp.status < 300 and not hit.query:
                    return resp
                return self._answered(req, resp, False)
        return await self._full(req, handler)

    async def _full(self, req: ClientRequest, handler: Handler) -> ClientResponse:
        """The whole path: any request the fast lane does not take."""
        if self._closed:
            raise self._closed_error()
        # Spelt out: a request with a scope of the caller's that the core remembers takes
        # this path too. A redirect to hide is rare, and a caller's own Authorization too
        # (None, not [], when there is none).
        followed = _followed.get() is not None and hide_followed_redirect(req)
        headers = req.headers
        callers_auth = headers.getall(hdrs.AUTHORIZATION, None)
        info = _request_info_var.get(None)
        # tuple.__new__ is RequestFacts(...) without the NamedTuple's Python __new__.
        facts = _tuple_new(RequestFacts, (
            req.method, req.url, None if info is None else info.required_scope,
            _scope_var.get(EMPTY_SCOPE), callers_auth is not None,
        ))  # fmt: skip
        core = self._core
        core.now = now = asyncio.get_running_loop().time()
        credentials = self._credentials
        if now >= credentials.next_check:
            credentials.watch(now)
            core.hits_until = credentials.next_check
        try:
            # The hot path: the core needs nothing but to send (a cached token, say).
            prep = core.ready(facts)
            if prep is None:
                resp = await self._drive(
                    req, handler, core.request_flow(facts, ready_refused=True), None
                )
            else:
                if prep.authorization is not None:
                    headers[hdrs.AUTHORIZATION] = prep.authorization
                resp = await self._answer(req, handler, prep, await handler(req))
        finally:
            # aiohttp's request_info (in a response, and in the ClientResponseError of
            # raise_for_status or of an answer it cannot parse) is a view of the request's
            # live headers: take our credential out once sent, whatever happened.
            if callers_auth is None:
                headers.popall(hdrs.AUTHORIZATION, None)
            elif headers.getall(hdrs.AUTHORIZATION, None) != callers_auth:
                headers.popall(hdrs.AUTHORIZATION, None)
                for value in callers_auth:
                    headers.add(hdrs.AUTHORIZATION, value)
        return self._answered(req, resp, followed)

    async def _answer(
        self, req: ClientRequest, handler: Handler, prep: Prepared, resp: ClientResponse
    ) -> ClientResponse:
        """Give the core the answer to a request sent as ``prep`` said; follow its flow."""
        if resp.status == 401:
            reply = Reply(401, tuple(resp.headers.getall(hdrs.WWW_AUTHENTICATE, ())))
            return await self._drive(req, handler, self._core.after(prep, reply), resp)
        self._core.settle(prep, resp.status)
        return resp

    def _answered(self, req: ClientRequest, resp: ClientResponse, followed: bool) -> ClientResponse:
        """What every answer passed back goes through: the 429 log, hiding pre-signed
        URLs, noting a redirect to hide."""
        status = resp.status
        if status == 429:
            log.debug(
                "%s answered 429 (Retry-After %s, RateLimit-Remaining %s)",
                req.url.host,
                resp.headers.get(hdrs.RETRY_AFTER),
                resp.headers.get("RateLimit-Remaining"),
            )
        if followed or (req.url.raw_query_string and is_presigned(req.url)):
            hide_presigned(resp, every_value=followed)
        if 300 <= status < 400:
            note_redirect(req, resp)
        return resp

    async def _drive(
        self,
        req: ClientRequest,
        handler: Handler,
        flow: Generator[Any, Any, Outcome],
        resp: ClientResponse | None,
    ) -> ClientResponse:
        """Run a flow of the core, performing each effect it yields, to its outcome."""
        loop = asyncio.get_running_loop()
        value: Any = None
        try:
            while True:
                try:
                    effect = self._core.resume(flow, value, loop.time())
                except StopIteration as stop:
                    outcome = stop.value
                    break
                if isinstance(effect, Send | Resend):
                    if isinstance(effect, Resend):
                        req.headers[hdrs.AUTHORIZATION] = effect.authorization
                        close = getattr(req, "close", None)
                        if close is not None:
                            # Finish the first attempt's body writer before the payload rewinds.
                            await close()
                        resp = await handler(req)
                    else:
                        resp = await self._send(req, handler, effect)
                    status = resp.status
                    challenges = (
                        resp.headers.getall(hdrs.WWW_AUTHENTICATE, ()) if status == 401 else ()
                    )
                    value = Reply(status, tuple(challenges))
                elif isinstance(effect, PrepareResend):
                    assert resp is not None
                    self._check_replayable(req, resp)
                    resp.release()
                    value = None
                else:
                    value = await self._perform(effect)
        finally:
            flow.close()
        if isinstance(outcome, Fail):
            if resp is not None:
                resp.release()
            raise outcome.error
        assert resp is not None, "a flow that sent nothing ends in Fail"
        if isinstance(outcome, Deny):
            return await rewrite_403(resp, denied_body(outcome))
        return resp

    async def _send(self, req: ClientRequest, handler: Handler, effect: Send) -> ClientResponse:
        if effect.authorization is not None:
            req.headers[hdrs.AUTHORIZATION] = effect.authorization
        if not effect.probe:
            return await handler(req)
        try:
            return await handler(req)
        finally:
            # Waiters resume on a later turn of the loop; by then the core has recorded
            # the answer's challenge and this request's token fetch for them to join.
            self._core.probe_ended(req.url)
            ev = self._probes.pop(req.url.origin(), None)
            if ev is not None:
                ev.set()

    async def _perform(self, effect: object) -> Any:
        if isinstance(effect, LookupCredentials):
            return await self._credentials.entry(effect)
        if isinstance(effect, AwaitProbe):
            ev = self._probes.setdefault(effect.origin, asyncio.Event())
            await ev.wait()
            if self._closed:
                raise self._closed_error()
            return None
        if isinstance(effect, FetchToken):
            return await self._fetches.run(effect.key, lambda: self._fetch(effect.job))
        if isinstance(effect, RefreshInBackground):
            self._spawn(self._refresh(effect.key, effect.job))
            return None
        raise TypeError(f"unknown effect {effect!r}")  # pragma: no cover

    @staticmethod
    def _check_replayable(req: ClientRequest, resp: ClientResponse) -> None:
        # aiohttp resends a consumed streaming body as an empty one, with no error
        # (measured: async generators and pipes); refuse instead of sending garbage.
        if getattr(req.body, "consumed", False):
            resp.release()
            raise BodyNotReplayableError(
                f"{req.method} {redact_url(req.url)} was answered 401 and its streaming body "
                "cannot be sent again; authorise first (for example with a request that has "
                "no body, or with_scope before streaming)",
                registry=req.url.host,
                step="retry",
                status=401,
            )

    # -- token fetches -----------------------------------------------------

    async def _fetch(self, job: FetchJob) -> AccessToken | OCIAuthError:
        """Run the core's fetch flow for ``job``, performing its token calls."""
        lock: contextlib.AbstractAsyncContextManager[Any] = contextlib.nullcontext()
        if self._p.serialize_token_fetches:
            lock = self._locks.hold(job.origin.url)
        clock = asyncio.get_running_loop().time
        async with lock:
            return await fetch_token(self._core, job, self._token_call, self._shared, clock)

    async def _refresh(self, key: FetchKey, job: FetchJob) -> None:
        try:
            got = await self._fetch(job)
        finally:
            self._core.fetch_ended(key)
        if isinstance(got, OCIAuthError):
            log.debug("refresh ahead for %s failed: %s", job.origin.host, got)

    async def _token_call(self, call: TokenCall) -> TokenReply:
        """One token-server exchange with bounded time, size and retries; no redirects."""
        return await retrying_token_call(call, self._p, self.stats, self._exchange)

    async def _exchange(
        self, call: TokenCall, headers: dict[str, str], where: str
    ) -> tuple[TokenReply, float | None]:
        """One attempt: the reply, and the server's Retry-After (seconds) when it gave one."""
        status: int | None = None
        try:
            async with self._token_session(call).request(
                call.method,
                call.url,
                data=dict(call.form) if call.form is not None else None,
                headers=headers,
                allow_redirects=False,
                middlewares=(),
                timeout=aiohttp.ClientTimeout(total=self._p.token_timeout),
            ) as resp:
                status = resp.status
                if status == 200:
                    body = await read_capped(resp, self._p.max_token_response, where, call.registry)
                    return TokenReply(200, body), None
                wait = parse_retry_after(
                    resp.headers.get(hdrs.RETRY_AFTER), self._p.retry_max_wait, time.time()
                )
                return TokenReply(status), wait
        except OCIAuthError as exc:
            return TokenReply(status, error=exc), None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            refused = getattr(exc, "os_error", None)
            if isinstance(refused, RealmAddressError):
                error: OCIAuthError = RealmPolicyError(
                    f"refusing token request for {call.registry}: {refused}",
                    registry=call.registry,
                    step="realm",
                )
                return TokenReply(None, error=error), None
            error = TokenServerError(
                f"{where} could not be reached: {type(exc).__name__}",
                registry=call.registry,
                step="token",
                status=status,
            )
            return TokenReply(None, error=error), None


def new_std_transport(params: StdTransportParams | None = None) -> AuthMiddleware:
    """The middleware for ``aiohttp.ClientSession(middlewares=[...])`` (Go: ``NewStdTransport``)."""
    return AuthMiddleware(params)
