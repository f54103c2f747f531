"""The aiohttp client middleware: the registry token flows of the Go original, concurrent.

``new_std_transport(params)`` returns an :class:`AuthMiddleware`; put it in
``aiohttp.ClientSession(middlewares=[mw])``. For each request it decides which
credentials to attach (a cached bearer token, Basic credentials, nothing),
sends it, and on a 401 with a usable challenge acquires what the challenge
asks for and sends the request once more.

State lives in one :class:`AuthMiddleware` per program (or per identity):
per registry origin, the last challenge and the first-contact probe; per
origin and credentials, a partition of the token cache and the current
refresh token; and the in-flight token fetches shared by concurrent requests.
No lock is held across I/O: concurrent requests that need the same token wait
on one shared fetch, and fetches for different scopes run in parallel.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import ClientRequest, ClientResponse, hdrs
from yarl import URL

from aociauth._redact import redact_text, redact_url
from aociauth._resolver import RealmAddressError, RealmGuardResolver, loopback_allowed
from aociauth._responses import (
    hide_followed_redirect,
    hide_presigned,
    note_presigned_redirect,
    read_capped,
    rewrite_403,
)
from aociauth.challenge import Challenge, parse_challenges, select_challenge
from aociauth.config import ConfigEntry, ConfigFile
from aociauth.context import request_info_from_context, request_info_is_set, scope_from_context
from aociauth.errors import (
    AuthRequestError,
    BodyNotReplayableError,
    ChallengeError,
    CredentialLookupError,
    OCIAuthError,
    RealmPolicyError,
    TokenServerError,
)
from aociauth.flow import (
    REFUSALS,
    backoff,
    basic_authorization,
    host_key,
    is_presigned,
    primary_repository,
    refresh_grant_form,
    refused_by_its_own_claims,
    retry_after,
    token_get_url,
    worth_asking_again,
)
from aociauth.inference import infer_scope
from aociauth.params import AuthStats, StdTransportParams
from aociauth.realm import RealmDecision, check_realm, on_this_machine
from aociauth.scope import Scope, new_scope, parse_scope, unlimited_scope
from aociauth.tokens import (
    AccessToken,
    TokenCache,
    TokenResponse,
    granted_scope,
    parse_token_response,
)

__all__ = ["AuthMiddleware", "AuthStats", "StdTransportParams", "new_std_transport"]

log = logging.getLogger("aociauth")

Handler = Callable[[ClientRequest], Awaitable[ClientResponse]]


@dataclass
class _Credentials:
    """What the config said for one (origin, namespace), plus the current refresh token."""

    entry: ConfigEntry
    refresh_token: str = field(repr=False)
    partition: Hashable = None
    #: The Basic Authorization value, built once ("" without both user and password).
    basic: str = field(default="", repr=False)


@dataclass
class _Origin:
    """What is known of one registry origin (scheme, host, port)."""

    url: URL
    host: str
    challenge: Challenge | None = None
    probe: asyncio.Future[None] | None = None
    contacted: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    creds: dict[str, asyncio.Future[_Credentials]] = field(default_factory=dict)
    picky: bool = False
    #: The config's per-namespace keys under this host, longest first (asked once).
    namespaces: tuple[str, ...] | None = None


@dataclass(frozen=True)
class _FetchKey:
    partition: Hashable
    realm: str
    service: str
    scope: Scope


class AuthMiddleware:
    """An aiohttp client middleware that authorises requests to Docker/OCI registries.

    Use it as ``aiohttp.ClientSession(middlewares=[mw])`` and as an async
    context manager (or ``await mw.close()``) so the background work and the
    session it owns are released. One instance keeps the token cache for
    every registry it meets; share it between sessions for the same identity.
    """

    def __init__(self, params: StdTransportParams | None = None) -> None:
        self._p = params or StdTransportParams()
        self._config = self._p.config
        self._origins: dict[URL, _Origin] = {}
        self._cache = TokenCache(self._p.cache_size)
        self._inflight: dict[_FetchKey, asyncio.Task[AccessToken]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refreshing: set[_FetchKey] = set()
        self._partitions: dict[tuple[URL, str, ConfigEntry], int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.stats = AuthStats()

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
        """Cancel background refreshes and shared fetches; close the session the middleware owns."""
        self._closed = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._inflight.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _token_session(self) -> aiohttp.ClientSession:
        if self._p.session is not None:
            return self._p.session
        if self._session is None or self._session.closed:
            connector = None
            if not self._p.realm_policy.allow_private_realms:
                # Judge the addresses a realm's name resolves to, not only its text;
                # no DNS cache, so every new connection is judged afresh.
                connector = aiohttp.TCPConnector(resolver=RealmGuardResolver(), use_dns_cache=False)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def cached_token(self, url: str | URL, scope: Scope | None = None) -> AccessToken | None:
        """A cached, still usable token for the registry at ``url`` holding ``scope``.

        For tools that show what the flow obtained (``aociauth token``); the
        token's ``repr`` hides its value. ``scope`` None means any token.
        """
        origin = URL(str(url)).origin()
        st = self._origins.get(origin)
        if st is None:
            return None
        now = asyncio.get_running_loop().time()
        for task in list(st.creds.values()):
            creds = _finished(task)
            tok = self._cache.get(creds.partition, scope or Scope(), now) if creds else None
            if tok is not None:
                return tok
        return None

    # -- the middleware ----------------------------------------------------

    async def __call__(self, req: ClientRequest, handler: Handler) -> ClientResponse:
        """Authorise ``req``, send it, and answer one usable 401 challenge."""
        self.stats.requests += 1
        hide_followed_redirect(req)
        st = self._origin(req.url)
        inferred = infer_scope(req.method, req.url.path, req.url.query)
        registry_api = inferred is not None
        if request_info_is_set():
            required, known, registry_api = request_info_from_context().required_scope, True, True
        elif inferred is not None and self._p.infer_scopes:
            required, known = inferred, True
        else:
            required, known = Scope(), False
        want = scope_from_context()
        if (
            want.is_unlimited()
            or len(want) > self._p.max_scope_items
            or (len(str(want)) > self._p.max_scope_bytes)
        ):
            # Bounded: thousands of scope items make a token request servers refuse
            # (8 KiB request lines are common), and are an amplification in themselves.
            # The required scope still goes.
            log.debug("aociauth: wanted scope too large; leaving it out of token requests")
            want = Scope()
        creds: _Credentials | None = None
        if registry_api or st.challenge is not None or st.creds:
            creds = await self._credentials(st, primary_repository(required))
        # else: not a registry API request (a blob's CDN hop, say) to an origin that has
        # never challenged: nothing to attach, so no config lookup or helper run for it
        # unless it answers with a challenge.
        callers_auth = req.headers.getall(hdrs.AUTHORIZATION, [])
        try:
            resp = await self._send(req, handler, st, creds, required, want, known)
        finally:
            # aiohttp's request_info (in a response, and in the ClientResponseError of
            # raise_for_status or of an answer it cannot parse) is a view of the request's
            # live headers: take our credential out once sent, whatever happened.
            if req.headers.getall(hdrs.AUTHORIZATION, []) != callers_auth:
                req.headers.popall(hdrs.AUTHORIZATION, None)
                for value in callers_auth:
                    req.headers.add(hdrs.AUTHORIZATION, value)
        if is_presigned(req.url):
            hide_presigned(resp)
        note_presigned_redirect(req, resp)
        return resp

    async def _send(
        self,
        req: ClientRequest,
        handler: Handler,
        st: _Origin,
        creds: _Credentials | None,
        required: Scope,
        want: Scope,
        known: bool,
    ) -> ClientResponse:
        # Only registry API requests are held back at first contact: a CDN hop has no
        # challenge to learn, and holding its burst back would only add latency.
        probe = await self._wait_first_contact(st) if creds is not None else False
        try:
            sent, asked = (None, None)
            if creds is not None:
                sent, asked = await self._authorize(req, st, creds, required, want, known)
            sent_at = asyncio.get_running_loop().time()
            resp = await handler(req)
        finally:
            if probe:
                # Waiters resume on a later turn of the loop; by then a 401 below has
                # recorded its challenge and registered its token fetch for them to join.
                self._end_probe(st)
        st.contacted = True
        if resp.status == 429:
            # A rate limit is not an auth failure: passed back untouched, no token refetch.
            self.stats.registry_429s += 1
            log.debug(
                "aociauth: %s answered 429 (Retry-After %s, RateLimit-Remaining %s)",
                st.host,
                resp.headers.get(hdrs.RETRY_AFTER),
                resp.headers.get("RateLimit-Remaining"),
            )
        if resp.status != 401:
            return resp
        self.stats.responses_401 += 1
        return await self._on_401(
            req, handler, resp, st, creds, required, want, sent, asked, sent_at
        )

    def _origin(self, url: URL) -> _Origin:
        origin = url.origin()
        st = self._origins.get(origin)
        if st is None:
            st = self._origins[origin] = _Origin(url=origin, host=host_key(url))
        return st

    async def _wait_first_contact(self, st: _Origin) -> bool:
        """Hold back a burst to a registry not yet contacted; True for the request sent first."""
        if not self._p.coalesce_first_contact:
            return False
        while not st.contacted and st.challenge is None:
            if st.probe is None:
                st.probe = asyncio.get_running_loop().create_future()
                return True
            self.stats.first_contact_waits += 1
            await asyncio.shield(st.probe)
        return False

    @staticmethod
    def _end_probe(st: _Origin) -> None:
        fut, st.probe = st.probe, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    # -- credentials ---------------------------------------------------------

    async def _credentials(self, st: _Origin, repository: str) -> _Credentials:
        """The credentials for a repository of a registry, looked up once and shared.

        Like the original, the answer (or the failure) is remembered for the
        life of the middleware, so a helper runs once per registry (and namespace).
        """
        namespace = self._namespace(st, repository)
        task = st.creds.get(namespace)
        if task is None:
            task = st.creds[namespace] = self._spawn(self._load_credentials(st, namespace))
            task.add_done_callback(_retrieve)
        elif (creds := _finished(task)) is not None:
            return creds  # the hot path: no shield future per request
        return await asyncio.shield(task)

    async def _load_credentials(self, st: _Origin, namespace: str) -> _Credentials:
        if self._downgraded(st):
            entry = ConfigEntry()
        else:
            try:
                entry = await self._lookup(st.host, namespace)
            except Exception as exc:
                # A user's Config may raise anything; the caller gets one clear error type.
                # Our own errors carry no secret; a foreign message is scrubbed first.
                why = str(exc) if isinstance(exc, OCIAuthError) else redact_text(str(exc))
                raise CredentialLookupError(
                    f"cannot acquire auth info for registry {st.host!r}: {why}",
                    registry=st.host,
                    step="config",
                ) from exc
        # A small int names the identity (origin, namespace, credentials) in the
        # cache: hashing it on every lookup costs nothing, unlike the tuple.
        part: Hashable = self._partitions.setdefault(
            (st.url, namespace, entry), len(self._partitions)
        )
        basic = ""
        if entry.username and entry.password:
            basic = basic_authorization(entry.username, entry.password)
        creds = _Credentials(entry, entry.refresh_token, part, basic)
        if entry.access_token:
            # A config access token is a token of unlimited scope that never expires.
            self._cache.put(
                part, AccessToken(entry.access_token, unlimited_scope(), -math.inf, math.inf)
            )
        return creds

    def _downgraded(self, st: _Origin) -> bool:
        """Plain http to a host we have spoken https to: a downgrade, so no credentials at all."""
        return st.url.scheme == "http" and any(
            o.scheme == "https" and o.host == st.url.host for o in self._origins
        )

    def _namespace(self, st: _Origin, repository: str) -> str:
        """The longest per-namespace ``auths`` key of the config that covers the repository."""
        if not repository:
            return ""
        if st.namespaces is None:
            lister = getattr(self._config, "namespaces", None)
            st.namespaces = tuple(lister(st.host)) if lister is not None else ()
        for ns in st.namespaces:
            if repository == ns or repository.startswith(ns + "/"):
                return str(ns)
        return ""

    async def _lookup(self, host: str, namespace: str) -> ConfigEntry:
        if self._config is None:
            return ConfigEntry()
        self.stats.config_lookups += 1
        if isinstance(self._config, ConfigFile):
            # A ConfigFile says where the answer came from: tell the story, count helper runs.
            res = await self._config.resolve(host, namespace)
            if res.helper is not None:
                self.stats.helper_runs += 1
            log.debug(
                "aociauth: credentials for %s%s: %s (key %r, %s, from %s)",
                host,
                f"/{namespace}" if namespace else "",
                res.entry,
                res.key,
                res.kind,
                res.helper or res.source,
            )
            return res.entry
        if namespace:
            by_repo = getattr(self._config, "entry_for_repository", None)
            if by_repo is not None:
                entry: ConfigEntry = await by_repo(host, namespace)
                return entry
        return await self._config.entry_for_registry(host)

    # -- before sending ------------------------------------------------------

    async def _authorize(
        self,
        req: ClientRequest,
        st: _Origin,
        creds: _Credentials,
        required: Scope,
        want: Scope,
        known: bool,
    ) -> tuple[AccessToken | None, Scope | None]:
        """Attach what we have before sending.

        Returns the token attached, if any, and the scope asked for when it was
        fetched for this very request (None when it came from the cache).
        """
        loop_now = asyncio.get_running_loop().time()
        tok = self._cache.get(creds.partition, required, loop_now)
        if tok is not None:
            self.stats.cache_hits += 1
            self._maybe_refresh_ahead(st, creds, tok, loop_now)
            _set_bearer(req, tok)
            return tok, None
        self.stats.cache_misses += 1
        ch = st.challenge
        if ch is None:
            return None, None
        if ch.scheme == "bearer":
            if creds.refresh_token or (known and self._p.authorize_ahead):
                # With a refresh token the original acquires ahead too (and fails if it cannot).
                self.stats.fetches_ahead += 1
                try:
                    tok = await self._acquire(st, creds, ch, required, want)
                except TokenServerError as exc:
                    ask_again = worth_asking_again(exc.status)
                    if not ask_again or (creds.refresh_token and not self._p.authorize_ahead):
                        raise
                    self.stats.fetches_ahead_failed += 1
                    log.debug(
                        "aociauth: early token fetch for %s refused (%s); the challenge decides",
                        st.host,
                        exc,
                    )
                    return None, None
                _set_bearer(req, tok)
                return tok, required.union(want)
            return None, None
        if creds.basic:
            req.headers[hdrs.AUTHORIZATION] = creds.basic
        return None, None

    # -- after a 401 ---------------------------------------------------------

    async def _on_401(
        self,
        req: ClientRequest,
        handler: Handler,
        resp: ClientResponse,
        st: _Origin,
        creds: _Credentials | None,
        required: Scope,
        want: Scope,
        sent: AccessToken | None,
        asked: Scope | None,
        sent_at: float,
    ) -> ClientResponse:
        ch = select_challenge(parse_challenges(resp.headers.getall(hdrs.WWW_AUTHENTICATE, ())))
        if ch is None:
            return resp
        st.challenge = ch
        if creds is None:
            creds = await self._credentials(st, primary_repository(required))
            sent_at = -math.inf  # nothing of ours went with it: any cached token will do
        if ch.scheme == "bearer":
            ch_scope = parse_scope(ch.params.get("scope", ""))
            if sent is not None:
                self._forget(creds, sent, ch, ch_scope)
                if refused_by_its_own_claims(sent, asked, ch_scope):
                    # The original's "401 with a freshly acquired token", without asking again.
                    self.stats.refused_ahead += 1
                    return await self._denied(resp)
            self._check_replayable(req, resp, st)
            resp.release()
            # Any token obtained after this request went out is as fresh as a new fetch.
            tok = await self._acquire(
                st, creds, ch, ch_scope, want.union(required), newer_than=sent_at
            )
            _set_bearer(req, tok)
            resp2 = await self._resend(req, handler)
            if resp2.status == 401:
                self.stats.responses_401 += 1
                return await self._denied(resp2)
            return resp2
        # Basic: send credentials if we have them and have not sent them already.
        if not creds.basic or hdrs.AUTHORIZATION in req.headers:
            return resp
        self._check_replayable(req, resp, st)
        resp.release()
        req.headers[hdrs.AUTHORIZATION] = creds.basic
        resp2 = await self._resend(req, handler)
        if resp2.status == 401:
            self.stats.responses_401 += 1
        return resp2

    async def _denied(self, resp: ClientResponse) -> ClientResponse:
        self.stats.rewritten_403 += 1
        return await rewrite_403(resp)

    def _forget(
        self, creds: _Credentials, sent: AccessToken, ch: Challenge, ch_scope: Scope
    ) -> None:
        """A token the registry refused: drop it, or narrow it when it only lacked some scope."""
        if ch.params.get("error") == "insufficient_scope" and not ch_scope.is_empty():
            self._cache.replace(creds.partition, sent, sent.narrowed(ch_scope))
        else:
            self._cache.discard(creds.partition, sent)

    @staticmethod
    def _check_replayable(req: ClientRequest, resp: ClientResponse, st: _Origin) -> None:
        # aiohttp resends a consumed streaming body as an empty one, with no error
        # (measured: async generators and pipes); refuse instead of sending garbage.
        if getattr(req.body, "consumed", False):
            resp.release()
            raise BodyNotReplayableError(
                f"{req.method} {redact_url(req.url)} was answered 401 and its streaming body "
                "cannot be sent again; authorise first (for example with a request that has "
                "no body, or with_scope before streaming)",
                registry=st.host,
                step="retry",
                status=401,
            )

    async def _resend(self, req: ClientRequest, handler: Handler) -> ClientResponse:
        self.stats.retries_after_401 += 1
        close = getattr(req, "close", None)
        if close is not None:
            # Finish any body writer of the first attempt before the payload rewinds.
            await close()
        return await handler(req)

    # -- acquiring tokens ----------------------------------------------------

    async def _acquire(
        self,
        st: _Origin,
        creds: _Credentials,
        ch: Challenge,
        required: Scope,
        want: Scope,
        *,
        newer_than: float = -math.inf,
    ) -> AccessToken:
        """A token holding ``required`` (asking for ``want`` too), shared by concurrent calls."""
        realm = ch.params.get("realm", "")
        service = ch.params.get("service", "")
        wanted = required.union(want)
        now = asyncio.get_running_loop().time()
        tok = self._cache.get(creds.partition, required, now)
        if tok is not None and tok.issued_at >= newer_than:
            return tok
        for k, running in list(self._inflight.items()):
            if k.partition == creds.partition and k.realm == realm and k.scope.contains(required):
                # That fetch asked for everything we need: its answer (even a subset
                # grant) is what asking again would get.
                return await asyncio.shield(running)
        key = _FetchKey(creds.partition, realm, service, wanted)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(st, creds, ch, required, wanted))
            self._inflight[key] = task
            self._tasks.add(task)

            def done(t: asyncio.Task[AccessToken], key: _FetchKey = key) -> None:
                self._tasks.discard(t)
                if self._inflight.get(key) is t:
                    del self._inflight[key]
                _retrieve(t)

            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _fetch(
        self, st: _Origin, creds: _Credentials, ch: Challenge, required: Scope, wanted: Scope
    ) -> AccessToken:
        """One token fetch: the wide scope, then (if refused with 401) the required scope alone."""
        if self._p.serialize_token_fetches:
            async with st.lock:
                return await self._fetch_unlocked(st, creds, ch, required, wanted)
        return await self._fetch_unlocked(st, creds, ch, required, wanted)

    async def _fetch_unlocked(
        self, st: _Origin, creds: _Credentials, ch: Challenge, required: Scope, wanted: Scope
    ) -> AccessToken:
        self.stats.token_fetches += 1
        scope = required if st.picky else wanted
        try:
            try:
                resp = await self._token_request(st, creds, ch, scope)
            except TokenServerError as exc:
                if exc.status not in REFUSALS or scope == required:
                    raise
                # The spec says a subset grant is not an error, but some token servers
                # reject a request for more than they grant (401, as the original expects;
                # others answer 400 or 403, or 414 for a long query): ask for what is required.
                st.picky = True
                scope = required
                resp = await self._token_request(st, creds, ch, scope)
        except AuthRequestError:
            self.stats.token_fetch_failures += 1
            raise
        if resp.refresh_token:
            creds.refresh_token = resp.refresh_token
        now = asyncio.get_running_loop().time()
        granted = granted_scope(resp.token)
        if granted is not None and not granted.contains(scope):
            # A subset grant (allowed by the spec): cache what the token can really do,
            # so it is neither sent in vain for the rest nor refetched for what it has.
            log.debug(
                "aociauth: token for %s grants only %r of %r", st.host, str(granted), str(scope)
            )
            scope = new_scope(*(rs for rs in scope if rs in granted))
        tok = AccessToken(resp.token, scope, now, now + resp.expires_in, granted is not None)
        self._cache.put(creds.partition, tok)
        log.debug(
            "aociauth: token for %s scope=%r expires_in=%.0fs", st.host, str(scope), resp.expires_in
        )
        return tok

    def _maybe_refresh_ahead(
        self, st: _Origin, creds: _Credentials, tok: AccessToken, now: float
    ) -> None:
        if not self._p.refresh_ahead or self._closed or st.challenge is None:
            return
        if st.challenge.scheme != "bearer" or not tok.refresh_due(now, self._p.refresh_fraction):
            return
        ch = st.challenge
        key = _FetchKey(creds.partition, ch.params.get("realm", ""), "refresh", tok.scope)
        if key in self._refreshing:
            return
        self._refreshing.add(key)

        async def refresh() -> None:
            try:
                self.stats.refreshes_ahead += 1
                await self._fetch(st, creds, ch, tok.scope, tok.scope)
            except AuthRequestError as exc:
                log.debug("aociauth: refresh ahead for %s failed: %s", st.host, exc)
            finally:
                self._refreshing.discard(key)

        self._spawn(refresh())

    async def _token_request(
        self, st: _Origin, creds: _Credentials, ch: Challenge, scope: Scope
    ) -> TokenResponse:
        realm = ch.params.get("realm", "")
        if not realm:
            raise ChallengeError(
                f"malformed Www-Authenticate header from {st.host} (missing realm)",
                registry=st.host,
                step="challenge",
            )
        try:
            if not URL(realm).is_absolute():
                # A relative realm (seen in the wild) is relative to the registry.
                realm = str(st.url.join(URL(realm)))
        except (ValueError, TypeError):
            pass  # check_realm refuses what does not parse
        verdict = check_realm(st.url, realm, self._p.realm_policy)
        if verdict.decision is RealmDecision.REFUSE:
            raise RealmPolicyError(
                f"refusing token request for {st.host}: {verdict.reason}",
                registry=st.host,
                step="realm",
            )
        use_creds = verdict.decision is RealmDecision.CREDENTIALS
        if not use_creds and (creds.basic or creds.refresh_token):
            self.stats.anonymous_realm_downgrades += 1
            log.warning(
                "aociauth: realm for %s is not trusted with credentials (%s); asking anonymously",
                st.host,
                verdict.reason,
            )
        service = ch.params.get("service", "")
        realm_url = verdict.url
        if use_creds and creds.refresh_token:
            form = refresh_grant_form(creds.refresh_token, scope, service)
            try:
                return await self._token_http(st, "post_refresh", "POST", realm_url, data=form)
            except TokenServerError as exc:
                # Not all token servers speak OAuth2 (404); GHCR answers POST with 405.
                if exc.status not in (404, 405):
                    raise
        url = token_get_url(realm_url, scope, service)
        auth = creds.basic if use_creds and creds.basic else None
        kind = "get_basic" if auth is not None else "get_anonymous"
        return await self._token_http(st, kind, "GET", url, auth=auth)

    async def _token_http(
        self,
        st: _Origin,
        kind: str,
        method: str,
        url: URL,
        *,
        data: dict[str, str] | None = None,
        auth: str | None = None,
    ) -> TokenResponse:
        """Send a token request with bounded time, size and retries; never follow a redirect."""
        attempts = max(1, self._p.token_attempts)
        where = f"token server {url.host} for {st.host}"
        headers = {hdrs.ACCEPT: "application/json"}
        if auth is not None:
            headers[hdrs.AUTHORIZATION] = auth
        for attempt in range(attempts):
            self.stats.token_requests[kind] = self.stats.token_requests.get(kind, 0) + 1
            log.debug(
                "aociauth: token request %d/%d for %s: %s %s (%s)",
                attempt + 1,
                attempts,
                st.host,
                method,
                redact_url(url),
                kind,
            )
            wait: float | None = None
            status: int | None = None
            local = loopback_allowed.set(on_this_machine(st.url.host or ""))
            try:
                async with self._token_session().request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    allow_redirects=False,
                    middlewares=(),
                    timeout=aiohttp.ClientTimeout(total=self._p.token_timeout),
                ) as resp:
                    status = resp.status
                    if status == 200:
                        body = await read_capped(resp, self._p.max_token_response, where, st.host)
                        return parse_token_response(body, registry=st.host)
                    if status != 429 and status < 500:
                        raise TokenServerError(
                            f"{where} answered {status}",
                            registry=st.host,
                            step="token",
                            status=status,
                        )
                    wait = retry_after(resp.headers.get(hdrs.RETRY_AFTER), self._p.retry_max_wait)
                    failure = TokenServerError(
                        f"{where} answered {status}", registry=st.host, step="token", status=status
                    )
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                if isinstance(exc, OCIAuthError):
                    raise
                refused = getattr(exc, "os_error", None)
                if isinstance(refused, RealmAddressError):
                    raise RealmPolicyError(
                        f"refusing token request for {st.host}: {refused}",
                        registry=st.host,
                        step="realm",
                    ) from None
                failure = TokenServerError(
                    f"{where} could not be reached: {type(exc).__name__}",
                    registry=st.host,
                    step="token",
                    status=status,
                )
            finally:
                loopback_allowed.reset(local)
            if attempt + 1 >= attempts:
                raise failure
            self.stats.token_server_retries += 1
            if wait is None:
                jitter = random.random()  # noqa: S311 (jitter, not a secret)
                wait = backoff(attempt, self._p.retry_backoff, self._p.retry_max_wait, jitter)
            log.debug("aociauth: %s failed (%s); retry in %.2fs", where, failure, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


def new_std_transport(params: StdTransportParams | None = None) -> AuthMiddleware:
    """The middleware for ``aiohttp.ClientSession(middlewares=[...])`` (Go: ``NewStdTransport``)."""
    return AuthMiddleware(params)


def _finished(task: asyncio.Future[_Credentials]) -> _Credentials | None:
    """The task's result if it has finished without failing, else None."""
    if task.done() and not task.cancelled() and task.exception() is None:
        return task.result()
    return None


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a shared task's failure as seen: its waiters get it; a failure with none is not news."""
    if not task.cancelled():
        task.exception()


def _set_bearer(req: ClientRequest, tok: AccessToken) -> None:
    req.headers[hdrs.AUTHORIZATION] = f"Bearer {tok.value}"
