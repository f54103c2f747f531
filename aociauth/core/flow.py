"""The auth flow, free of I/O: every decision, driven by an adapter.

:class:`AuthCore` holds what a middleware knows (origins, identities, the
token cache, refresh tokens, which fetches are in flight) and runs two kinds
of flow, generators in the manner of httpx's ``auth_flow``:

* :meth:`AuthCore.request_flow` for one request: it yields an *effect*
  (:class:`LookupCredentials`, :class:`AwaitProbe`, :class:`FetchToken`,
  :class:`RefreshInBackground`, :class:`Send`, :class:`Resend`), is sent the
  effect's result, and returns an *outcome* (:class:`Pass`, :class:`Deny`,
  :class:`Fail`);
* :meth:`AuthCore.fetch_flow` for one token fetch: it yields
  :class:`TokenCall` (one token-server exchange, retries included) and returns
  the :class:`~aociauth.tokens.AccessToken` or the error to raise.

The adapter (aiohttp's middleware, httpx's ``Auth``) performs the effects:
it sends, runs concurrent fetches of one key once, waits, and counts the
I/O it does. It decides nothing. Time is a parameter: the adapter resumes a
flow with :meth:`AuthCore.resume`, which gives the core ``now`` (a monotonic
clock) before the flow goes on.

Failures are values: the core builds the exception and the adapter raises it.
The only side channel is logging (debug lines telling the story of a fetch).
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable, Generator, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from yarl import URL

from aociauth._addresses import on_this_machine
from aociauth.challenge import Challenge, parse_challenges, select_challenge
from aociauth.core.origin import (
    Answered,
    FetchAheadRefused,
    FetchAheadWorked,
    OriginKey,
    Origins,
    OriginState,
    Phase,
    ProbeEnded,
    ProbeSent,
    RegistryCallSeen,
    WideScopeRefused,
    origin_key,
)
from aociauth.core.rules import (
    REFUSALS,
    basic_authorization,
    bounded_want,
    primary_repository,
    refresh_grant_form,
    refused_by_its_own_claims,
    registry_host,
    required_scope,
    token_get_url,
    worth_asking_again,
)
from aociauth.errors import (
    ChallengeError,
    OCIAuthError,
    RealmPolicyError,
    TokenResponseError,
    TokenServerError,
)
from aociauth.inference import infer_scope
from aociauth.realm import (
    RealmDecision,
    RealmPolicy,
    RealmVerdict,
    check_realm,
)
from aociauth.scope import EMPTY_SCOPE, Scope, new_scope, parse_scope, unlimited_scope
from aociauth.stats import AuthStats
from aociauth.tokens import (
    AccessToken,
    TokenCache,
    TokenResponse,
    granted_scope,
    parse_token_response,
)

if TYPE_CHECKING:
    from aociauth.config import ConfigEntry

__all__ = [
    "AuthCore",
    "AwaitProbe",
    "Deny",
    "Fail",
    "FetchJob",
    "FetchKey",
    "FetchToken",
    "FlowPolicy",
    "Identity",
    "LookupAnswer",
    "LookupCredentials",
    "Outcome",
    "Pass",
    "PrepareResend",
    "Prepared",
    "RefreshInBackground",
    "Reply",
    "RequestFacts",
    "Requester",
    "Resend",
    "Send",
    "TokenCall",
    "TokenReply",
]

log = logging.getLogger("aociauth")
_V = TypeVar("_V")


# -- settings ------------------------------------------------------------------


@dataclass(frozen=True)
class FlowPolicy:
    """The settings that steer decisions (a pure subset of ``StdTransportParams``)."""

    realm_policy: RealmPolicy = field(default_factory=RealmPolicy)
    infer_scopes: bool = True
    authorize_ahead: bool = True
    coalesce_first_contact: bool = True
    refresh_ahead: bool = True
    refresh_fraction: float = 0.15
    max_scope_items: int = 256
    max_scope_bytes: int = 4096
    cache_size: int = 10_000
    max_origins: int = 4096
    #: Seconds before refused credentials of a credential helper are asked for again
    #: at the same (origin, namespace); see :meth:`AuthCore.renewed`.
    helper_rerun_interval: float = 60.0
    coalesce_token_requests: int = 50


# -- values the flows exchange -------------------------------------------------


_NO_SCOPE = EMPTY_SCOPE


class RequestFacts(NamedTuple):
    """What the flow needs to know of a request (a tuple: built on every request)."""

    method: str
    url: URL
    #: The caller's ``RequestInfo`` required scope, None when unset.
    info_scope: Scope | None = None
    #: The caller's ``with_scope`` scope.
    wanted: Scope = _NO_SCOPE
    #: The caller set an ``Authorization`` header of its own.
    callers_authorization: bool = False


@dataclass(frozen=True)
class Identity:
    """Who we are at an origin (and namespace): one partition of the token cache."""

    partition: int
    username: str
    #: The Basic Authorization value ("" without both username and password).
    basic: str = field(repr=False)
    #: The config's refresh token (the current one is the core's to keep).
    refresh_token: str = field(repr=False)
    #: Where the credentials came from, or where the lookup looked in vain (see
    #: :class:`LookupAnswer`); for messages.
    source: str = ""
    #: The config had an entry for it (not necessarily one a token server can use).
    found: bool = False
    #: The namespace (per-namespace config key) it was looked up for ("" for the host).
    namespace: str = ""
    #: A credential helper gave it: asked for again when refused.
    from_helper: bool = False


@dataclass(frozen=True)
class FetchKey:
    """Concurrent fetches with one key are one fetch."""

    partition: Hashable
    realm: str
    service: str
    scope: Scope
    refresh: bool = False


@dataclass(frozen=True)
class FetchJob:
    """One token fetch: for ``required`` (asking for ``wanted``) under ``challenge``."""

    origin: OriginState
    identity: Identity
    challenge: Challenge
    required: Scope
    wanted: Scope
    #: The token this fetch replaces: the one being refreshed ahead, or the one the
    #: registry just refused. A shared cache must not hand it back.
    replacing: AccessToken | None = None


@dataclass(frozen=True)
class LookupAnswer:
    """The answer to :class:`LookupCredentials`: the entry, and where it came from.

    ``source`` is for messages and holds no secret: where the entry came from
    (``config file /home/me/.docker/config.json, key 'reg:5000'``, ``helper
    docker-credential-pass, credsStore of config file ...``), or, for an empty
    entry, where the lookup looked in vain (``looked in ...``); "" when unknown.
    """

    entry: ConfigEntry
    source: str = ""
    #: A credential helper's answer (``credHelpers``, ``credsStore``): it may expire.
    from_helper: bool = False


@dataclass(frozen=True)
class LookupCredentials:
    """Effect: the config's entry for (``host``, ``namespace``); send back a
    :class:`LookupAnswer` (or a bare ConfigEntry, whose source is unknown).

    Concurrent lookups of one (``origin``, ``namespace``) share one lookup.
    ``downgraded``: plain http to a host spoken to over https: send back an
    empty entry without asking the config.

    ``renewal`` 0 is a first lookup: an answer remembered from before will do.
    Otherwise the answer sent back before (a credential helper's) was refused:
    forget it and ask the config again, once per ``renewal`` number; concurrent
    lookups naming the same number share that one lookup, and a later one
    naming it gets its answer (one helper run for all the requests refused).

    Send back a :class:`LookupAnswer` to say the entry came from a credential helper
    (a bare ConfigEntry is taken as one that did not).
    """

    origin: URL
    host: str
    namespace: str
    downgraded: bool
    renewal: int = 0


@dataclass(frozen=True)
class AwaitProbe:
    """Effect: wait until the first request to ``origin`` has its answer; send back None."""

    origin: URL


@dataclass(frozen=True)
class FetchToken:
    """Effect: run (or join) the fetch ``key`` with :meth:`AuthCore.fetch_flow` of ``job``.

    Send back its AccessToken or its error. Call :meth:`AuthCore.fetch_ended`
    when the fetch of ``key`` ends.
    """

    key: FetchKey
    job: FetchJob


@dataclass(frozen=True)
class RefreshInBackground:
    """Effect: start the fetch ``key`` of ``job`` in the background; send back None at once.

    Call :meth:`AuthCore.fetch_ended` when it ends; its failure is only logged.
    """

    key: FetchKey
    job: FetchJob


class Send(NamedTuple):
    """Effect: send the request with ``authorization`` (None: as the caller made it).

    Send back a :class:`Reply`. ``probe``: it is the first request to its
    origin; call :meth:`AuthCore.probe_ended` once it has its answer or failed.
    """

    authorization: str | None
    probe: bool = False


@dataclass(frozen=True)
class PrepareResend:
    """Effect: the request will be sent again; send back None.

    The adapter refuses a body that cannot be sent twice (its error to raise)
    and releases the first response now, before any token fetch, so a pool of
    few connections never waits on a 401 nobody reads.
    """


@dataclass(frozen=True)
class Resend:
    """Effect: send the request once more with ``authorization``; send back a :class:`Reply`.

    Always after :class:`PrepareResend`.
    """

    authorization: str


class Reply(NamedTuple):
    """A registry's answer, as the flow needs it."""

    status: int
    #: The ``WWW-Authenticate`` lines (needed of a 401 only).
    challenges: tuple[str, ...] = ()


class Prepared(NamedTuple):
    """What was decided before a request went out (a tuple: built on every request)."""

    st: OriginState
    ident: Identity | None
    required: Scope
    want: Scope
    #: The token that went with it, and the scope it was fetched with for this very
    #: request (None when it came from the cache).
    sent: AccessToken | None
    asked: Scope | None
    authorization: str | None
    #: It is the first request to its origin.
    probe: bool
    facts: RequestFacts
    #: When it went out (the core's clock as it was decided).
    at: float

    @property
    def callers_authorization(self) -> bool:
        """The caller set an ``Authorization`` header of its own."""
        return self.facts.callers_authorization


@dataclass(frozen=True)
class TokenCall:
    """Effect of a fetch: one token-server exchange (the adapter retries 429, 5xx and
    connection errors with backoff); send back a :class:`TokenReply`."""

    #: ``get_basic``, ``get_anonymous`` or ``post_refresh``: what the adapter counts.
    kind: str
    method: str
    url: URL = field(repr=False)
    form: Mapping[str, str] | None = field(default=None, repr=False)
    authorization: str | None = field(default=None, repr=False)
    #: The registry is on this machine, so a loopback realm address is its neighbour.
    loopback_ok: bool = False
    registry: str = ""


@dataclass(frozen=True)
class TokenReply:
    """How a token-server exchange ended: a 200's body, another status, or an error."""

    status: int | None
    body: bytes = b""
    #: The adapter's error when there was no usable answer (unreachable, too big, refused address).
    error: OCIAuthError | None = None


@dataclass(frozen=True)
class Pass:
    """Outcome: the last response goes to the caller as it is."""


_PASS = Pass()
_ANSWERED = Answered()
_tuple_new = tuple.__new__


#: How a token request went: see :class:`Requester`.
How = Literal["basic", "refresh", "anonymous", "withheld"]


@dataclass(frozen=True)
class Requester:
    """Who a token request went as, for messages: never a secret.

    ``how`` is ``"basic"`` (username and password), ``"refresh"`` (a refresh
    token), ``"anonymous"`` (no credentials usable for a token request) or
    ``"withheld"`` (the realm policy does not trust the realm with the
    credentials). ``username`` and ``source`` are those of the credentials the
    config gave (see :class:`Identity`), ``found`` whether it gave any.
    """

    registry: str
    how: How
    username: str = ""
    source: str = ""
    found: bool = False

    @property
    def anonymous(self) -> bool:
        """No credentials went with the token request."""
        return self.how not in _OURS

    def credentials(self) -> str:
        """``the credentials of user 'alice'``, or ``the refresh token`` (no source)."""
        what = "the refresh token" if self.how == "refresh" else "the credentials"
        return f"{what} of user {_quoted(self.username)}" if self.username else what

    def origin(self) -> str:
        """`` (from SOURCE)``, or "" when the source is unknown."""
        return f" (from {self.source})" if self.source else ""

    def why_anonymous(self) -> str:
        """Why the request went without credentials."""
        if self.how == "withheld":
            return f"the realm is not trusted with {self.credentials()}{self.origin()}"
        if self.found:
            return f"{self.credentials()}{self.origin()} hold no password for a token request"
        looked = f" ({self.source})" if self.source else ""
        return f"no credentials were found{looked}"


#: How a token request goes with the identity's own credentials.
_OURS = frozenset({"basic", "refresh"})
#: The most of a name from a config file or a helper that a message shows.
_SHOWN_NAME = 256


def _quoted(text: str) -> str:
    """A name from a config file or a helper, fit for a message: quoted, escaped, bounded."""
    if len(text) <= _SHOWN_NAME:
        return repr(text)
    return repr(text[:_SHOWN_NAME]) + "..."


@dataclass(frozen=True)
class Deny:
    """Outcome: the last response (a 401 to a token just given) becomes 403 DENIED.

    ``reason`` says, for the body and the log, whose credentials the token was
    issued to and where they came from, or why it was asked for anonymously;
    ``requester`` holds the same facts as values.
    """

    reason: str = ""
    requester: Requester | None = None


@dataclass(frozen=True)
class Fail:
    """Outcome: raise ``error``."""

    error: OCIAuthError


Effect = (
    LookupCredentials
    | AwaitProbe
    | FetchToken
    | RefreshInBackground
    | Send
    | PrepareResend
    | Resend
)
Outcome = Pass | Deny | Fail
_Attached = tuple["AccessToken | None", "Scope | None", "str | None", Identity]
RequestFlow = Generator[Effect, Any, Outcome]
FetchFlow = Generator[TokenCall, TokenReply, "AccessToken | OCIAuthError"]


# -- the core ------------------------------------------------------------------


#: Requests the hot path remembers (see :meth:`AuthCore.ready`); first in, first out.
HOT_ENTRIES = 8192


@dataclass(frozen=True, slots=True)
class Hit:
    """What :meth:`AuthCore.ready` decided for one kind of request, and what must still
    hold for the decision to stand: the origin's state, the identity and the token
    (still current, still adopted, still cached) and the time (before ``fresh_until``).

    :meth:`AuthCore.hit` hands it out while it stands. A request sent with it needs
    nothing more unless the answer is a 401 or a 429 (see :meth:`AuthCore.settle`):
    the core remembers decisions only for origins past their first contact.
    """

    st: OriginState
    #: ``st.key``, kept here so that a hit reads nothing of the state.
    origin: OriginKey
    #: The core's generation when ``st`` and ``ident`` were current.
    generation: int
    ident: Identity
    tok: AccessToken
    fresh_until: float
    required: Scope
    want: Scope
    #: ``tok.authorization``, kept here so that a hit reads no attribute of the token.
    authorization: str
    #: The request's URL has a query (a pre-signed URL's, say), which the adapter reads.
    query: bool


class _Renewal(NamedTuple):
    """The last time an (origin, namespace)'s credentials were asked for again."""

    at: float
    #: The partition whose credentials were refused.
    partition: int
    number: int
    #: Its lookup is under way.
    pending: bool


class AuthCore:
    """Everything a middleware knows and decides; no I/O.

    One per middleware (one identity's view of the registries it meets).
    Not thread-safe: drive it from one event loop.
    """

    def __init__(self, policy: FlowPolicy | None = None, stats: AuthStats | None = None) -> None:
        self.policy = policy or FlowPolicy()
        self.stats = stats or AuthStats()
        #: Bumped whenever a decision the hot path remembers may no longer stand: an
        #: origin's state replaced or evicted, an identity replaced or forgotten. One
        #: number to compare on the hot path, not two tables to search.
        self._generation = 0
        self.origins = Origins(self.policy.max_origins, self._changed)
        self.cache = TokenCache(self.policy.cache_size)
        # The tables the hot path checks, held directly (see ready).
        self._origin_table = self.origins.table
        self._token_recency = self.cache.recency
        self._partitions: dict[tuple[OriginKey, str, Hashable], int] = {}
        self._next_partition = 0
        #: The identity adopted per (origin, namespace): asked of the config once.
        self._identities: dict[tuple[OriginKey, str], Identity] = {}
        #: The current refresh token of each partition.
        self._refresh: dict[int, str] = {}
        #: How each partition's last token was asked for (a Requester's ``how``).
        self._asked_as: dict[int, How] = {}
        #: The fetches running now, oldest first (an ordered set: only keys are read).
        self._inflight: dict[FetchKey, None] = {}
        #: Tokens taken from elsewhere (:meth:`adopt_token`), while they are referenced.
        self._adopted: weakref.WeakSet[AccessToken] = weakref.WeakSet()
        self._namespaces: Callable[[str], tuple[str, ...]] = lambda host: ()
        self._known_namespaces: dict[OriginKey, tuple[str, ...]] = {}
        #: Partitions whose credentials a token server refused last time they went.
        self._refused_creds: dict[int, None] = {}
        #: The last renewal per (origin, namespace); see :meth:`renewed`.
        self._renewals: dict[tuple[OriginKey, str], _Renewal] = {}
        self._renewal_count = 0
        #: The first fetch ahead under way per origin whose token server has granted
        #: none yet: other requests wait for it (see _attach).
        self._trials: dict[OriginKey, tuple[FetchKey, FetchJob]] = {}
        #: Scopes of requests waiting (on a first contact, or on a fetch they cannot
        #: join) per (partition, realm): the next token request asks for them too.
        self._held: dict[tuple[Hashable, str], dict[int, Scope]] = {}
        self._tickets = 0
        #: The hot path's memory, per (method, URL, info scope, wanted scope).
        self._hot: dict[tuple[object, ...], Hit] = {}
        #: The adapter's clock, as of the last resume (monotonic seconds).
        self.now = 0.0
        #: From this time on, :meth:`hit` refuses: the adapter has its own work to do
        #: first (checking whether the config changed, say) on the whole path.
        self.hits_until = -math.inf

    def _changed(self) -> None:
        """A decision the hot path remembers may no longer stand (see ``_generation``)."""
        self._generation += 1

    def resume(self, flow: Generator[Any, Any, Any], value: Any, now: float) -> Any:
        """Send ``value`` into ``flow`` at time ``now``: its next effect, or StopIteration."""
        self.now = now
        return flow.send(value)

    def set_namespaces(self, lister: Callable[[str], tuple[str, ...]]) -> None:
        """Where per-namespace config keys of a host are learnt (asked once per origin)."""
        self._namespaces = lister

    # -- facts the adapters ask for ------------------------------------------

    def origin_of(self, url: URL) -> OriginState:
        """The state of the origin ``url`` belongs to."""
        return self.origins.state(url, registry_host)

    def _keep(self, table: dict[int, _V], partition: int, value: _V) -> None:
        """``table[partition] = value``, the least recently set entry out past the bound
        (a fetch may end after its partition was evicted)."""
        table.pop(partition, None)
        table[partition] = value
        while len(table) > 2 * self.policy.max_origins:
            del table[next(iter(table))]

    def refresh_token(self, identity: Identity) -> str:
        """The identity's current refresh token."""
        return self._refresh.get(identity.partition, identity.refresh_token)

    def in_flight(self) -> frozenset[FetchKey]:
        """The fetches running now."""
        return frozenset(self._inflight)

    def cached_token(self, url: URL, scope: Scope, now: float) -> AccessToken | None:
        """A cached, usable token for the origin of ``url`` holding ``scope``, any identity."""
        origin = origin_key(url)
        for (o, _ns, _entry), part in list(self._partitions.items()):
            if o == origin:
                tok = self.cache.get(part, scope, now)
                if tok is not None:
                    return tok
        return None

    def adopt_token(self, identity: Identity, token: AccessToken) -> AccessToken | None:
        """Take into the identity's cache a token obtained elsewhere (another process's,
        from a shared cache), so the next request finds it here: what was cached, or
        None when nothing of it is usable.

        Its scope is only believed as far as the token's own ``access`` claim, when
        it has one, allows (:func:`~aociauth.tokens.granted_scope`): what travelled
        cannot grant more than the token does.
        """
        scope = token.scope
        granted = granted_scope(token.value)
        if granted is not None and not granted.contains(scope):
            scope = new_scope(*(rs for rs in scope if rs in granted))
            if scope.is_empty() and not token.scope.is_empty():
                return None
        tok = AccessToken(
            token.value, scope, token.issued_at, token.expires_at, granted is not None
        )
        if not tok.usable(self.now):
            return None
        self.cache.put(identity.partition, tok)
        self._adopted.add(tok)
        return tok

    # -- the adapters' notifications ----------------------------------------

    def fetch_ended(self, key: FetchKey) -> None:
        """The fetch of ``key`` ended (done, failed or cancelled)."""
        self._inflight.pop(key, None)

    def probe_ended(self, url: URL) -> None:
        """The first request to the origin of ``url`` has its answer, or will get none."""
        st = self.origins.get(url)
        if st is not None:
            self.origins.apply(st, ProbeEnded())

    # -- credentials -----------------------------------------------------------

    def _namespace(self, st: OriginState, required: Scope) -> str:
        """The longest per-namespace config key of the host that covers the request's
        repository (the one it pushes to, else the only one it names)."""
        spaces = self._known_namespaces.get(st.key)
        if spaces is None:
            spaces = self._known_namespaces[st.key] = tuple(self._namespaces(st.host))
            while len(self._known_namespaces) > self.policy.max_origins:
                del self._known_namespaces[next(iter(self._known_namespaces))]
        if not spaces:
            return ""
        repository = primary_repository(required)
        if not repository:
            return ""
        for ns in spaces:
            if repository == ns or repository.startswith(ns + "/"):
                return ns
        return ""

    def adopt(self, st: OriginState, namespace: str, entry: ConfigEntry | LookupAnswer) -> Identity:
        """The identity an entry the config gave for (origin, namespace) stands for.

        The first time an entry is seen, its access token (a token of unlimited
        scope that never expires) goes into the cache. ``entry`` is a
        :class:`LookupAnswer` when the adapter knows where it came from (for
        messages) and whether a credential helper gave it (asked again when refused).
        """
        answer = entry if isinstance(entry, LookupAnswer) else LookupAnswer(entry)
        entry = answer.entry
        key = (st.key, namespace, entry)
        part = self._partitions.pop(key, None)
        if part is None:
            part = self._next_partition
            self._next_partition += 1
            if entry.access_token:
                self.cache.put(
                    part, AccessToken(entry.access_token, unlimited_scope(), -math.inf, math.inf)
                )
        # Most recently adopted last; past the bound, the least recent partition goes
        # with what is kept per partition: a registry redirecting to ever new hosts
        # must not grow these tables (issue 10, item 9).
        self._partitions[key] = part
        while len(self._partitions) > 2 * self.policy.max_origins:
            gone = self._partitions.pop(next(iter(self._partitions)))
            self._refresh.pop(gone, None)
            self._asked_as.pop(gone, None)
            self._refused_creds.pop(gone, None)
        basic = ""
        if entry.username and entry.password:
            basic = basic_authorization(entry.username, entry.password)
        found = any((entry.username, entry.password, entry.refresh_token, entry.access_token))
        ident = Identity(
            part,
            entry.username,
            basic,
            entry.refresh_token,
            answer.source,
            found,
            namespace,
            answer.from_helper,
        )
        ident_key = (st.key, namespace)
        if ident_key in self._identities:
            self._changed()  # a replaced identity ends what the hot path remembers
        self._identities[ident_key] = ident
        while len(self._identities) > self.policy.max_origins:
            del self._identities[next(iter(self._identities))]
            self._changed()
        return ident

    def _identity(self, st: OriginState, required: Scope) -> Generator[Effect, Any, Identity]:
        """The identity for a request: adopted before, or looked up now."""
        ns = self._namespace(st, required)
        ident = self._identities.get((st.key, ns))
        if ident is not None:
            return ident
        return (yield from self._look_up(st, ns))

    def _look_up(
        self, st: OriginState, ns: str, renewal: int = 0
    ) -> Generator[Effect, Any, Identity]:
        downgraded = st.url.scheme == "http" and self.origins.spoke_https_to(st.url.host or "")
        got = yield LookupCredentials(st.url, st.host, ns, downgraded, renewal)
        return self.adopt(st, ns, got)

    def forget_credentials(self) -> None:
        """The config changed (a ``docker login`` while the program runs): ask it again.

        Every (origin, namespace) looks its credentials up again on its next
        request; tokens cached for an entry that did not change stay usable.
        """
        self._identities.clear()
        self._changed()
        self._known_namespaces.clear()

    def renewed(self, st: OriginState, ident: Identity) -> Generator[Effect, Any, Identity | None]:
        """After ``ident``'s credentials were refused: the identity to retry with, once.

        The rules (the README's section on credential helpers states them):

        * credentials another request already looked up again are retried at once;
        * only a credential helper's answer is asked for again: helpers hand out
          credentials that expire (ECR's 12-hour tokens, gcloud's 1-hour access
          tokens, ACR's refresh tokens), a file's entry changes only with the file;
        * at most once per (origin, namespace) per ``helper_rerun_interval``
          seconds, and requests refused meanwhile share that one lookup
          (:class:`LookupCredentials` with a ``renewal`` number);
        * None when the answer is the entry that was refused: nothing to retry with.

        The caller retries once with what this returns, so a fresh answer that is
        refused too ends the request (no loop).
        """
        key = (st.key, ident.namespace)
        current = self._identities.get(key)
        if current is not None and current.partition != ident.partition:
            return current
        if not ident.from_helper:
            return None
        last = self._renewals.get(key)
        if last is not None and last.partition == ident.partition and last.pending:
            number = last.number  # under way: share its lookup
        elif last is not None and self.now - last.at < self.policy.helper_rerun_interval:
            return None
        else:
            self._renewal_count += 1
            number = self._renewal_count
            started = self._renewals[key] = _Renewal(self.now, ident.partition, number, True)
            while len(self._renewals) > self.policy.max_origins:
                del self._renewals[next(iter(self._renewals))]
            self.stats.credentials_renewed += 1
            log.debug("credentials for %s were refused; asking the helper again", st.host)
            try:
                new = yield from self._look_up(st, ident.namespace, number)
            finally:
                # Ended, failed or abandoned: the interval runs from its start either way.
                if self._renewals.get(key) is started:
                    self._renewals[key] = started._replace(pending=False)
            return new if new.partition != ident.partition else None
        new = yield from self._look_up(st, ident.namespace, number)
        return new if new.partition != ident.partition else None

    def _creds_refused(self, ident: Identity, got: AccessToken | OCIAuthError) -> bool:
        """Whether a failed fetch was a token server refusing ``ident``'s own credentials."""
        return (
            isinstance(got, TokenServerError)
            and got.status in (401, 403)
            and ident.partition in self._refused_creds
        )

    # -- one request -----------------------------------------------------------

    def request_flow(self, facts: RequestFacts, *, ready_refused: bool = False) -> RequestFlow:
        """The flow of one request; see the module docstring for the protocol.

        ``ready_refused``: the adapter has just asked :meth:`ready`, which answered
        None, so the flow does not ask again."""
        prep = None if ready_refused else self.ready(facts)
        if prep is None:
            cold = yield from self._prepare(facts)
            if isinstance(cold, Fail):
                return cold
            prep = cold
        reply: Reply = yield Send(prep.authorization, prep.probe)
        return (yield from self.after(prep, reply))

    def _scopes(self, facts: RequestFacts) -> tuple[Scope, bool, bool, Scope]:
        """``(required, known, registry_api, wanted)`` of a request."""
        p = self.policy
        url = facts.url
        path = url.raw_path
        if "%" in path:
            path = url.path
        # Only a POST (a mount's ``from``) reads the query: parsing it costs.
        query = url.query if facts.method == "POST" else None
        inferred = infer_scope(facts.method, path, query)
        required, known, api = required_scope(inferred, facts.info_scope, infer=p.infer_scopes)
        want = facts.wanted
        if want:
            want = bounded_want(want, p.max_scope_items, p.max_scope_bytes)
        return required, known, api, want

    def hit(self, method: str, url: URL, now: float) -> Hit | None:
        """The fastest path: what goes with a plain request (no scope or request info
        of the caller's, no ``Authorization`` of its own) when :meth:`ready` decided it
        before and the decision stands; None otherwise (then ask :meth:`ready`).

        Counted and touched as a cache hit. Send it with ``hit.authorization``; a 401
        or a 429 in answer goes through :meth:`prepared`, and then :meth:`after` or
        :meth:`settle`, as for any request; any other answer needs nothing more.
        """
        if now >= self.hits_until:
            return None
        # ready's key for a plain request (see there).
        return self._standing(
            (method, url.scheme, url.raw_host, url.explicit_port, url.raw_path_qs), now
        )

    def _standing(self, key: tuple[object, ...], now: float) -> Hit | None:
        """The decision remembered for ``key``, counted as a cache hit, if it stands;
        forgotten if it does not."""
        hot = self._hot.get(key)
        if hot is None:
            return None
        # The origin's state and the identity still current (the generation), the
        # token still cached and fresh. Then TokenCache.touch and Origins.holds, spelt
        # out: no call on the hot path.
        if now < hot.fresh_until and hot.generation == self._generation:
            try:
                # One search of the recency order, not a membership test and then
                # a move: a token no longer cached is not in it.
                self._token_recency.move_to_end(hot.tok)
            except KeyError:
                pass
            else:
                self._origin_table.move_to_end(hot.origin)
                stats = self.stats
                stats.requests += 1
                stats.cache_hits += 1
                return hot
        del self._hot[key]
        return None

    def prepared(self, hit: Hit, facts: RequestFacts, now: float) -> Prepared:
        """``hit`` as the :class:`Prepared` of the request ``facts`` sent at ``now``."""
        # tuple.__new__ is Prepared(...) without the NamedTuple's Python __new__.
        return _tuple_new(Prepared, (
            hit.st, hit.ident, hit.required, hit.want, hit.tok, None,
            hit.authorization, False, facts, now,
        ))  # fmt: skip

    def ready(self, facts: RequestFacts) -> Prepared | None:
        """The hot path, without effects: what goes with a request that needs nothing
        but a cached token (or nothing at all), or None when the request needs the
        whole :meth:`request_flow`. Counts the request only when it answers."""
        # The same request again (a puller's GETs of blobs and manifests) skips the
        # scope inference, the origin table and the cache search: what they gave last
        # time stands while the origin's state, the identity and the token do.
        method, url, info_scope, wanted, _ = facts
        # Keyed by the URL's parts, not the URL: a client's URLs are fresh objects
        # (yarl caches only the last 128 parsed), whose __hash__ and __eq__ are Python
        # code, and whose stored copies would be more memory to touch. aiohttp has
        # read the scheme, host and port (explicit_port with it) to connect, and
        # reads raw_path_qs to send: each is computed once and cached in the URL.
        # The explicit port, not the port: the config is asked about "host:port"
        # only when the port is given. The fragment is never sent and decides nothing.
        # A plain request (no scope given by the caller) is keyed without the scopes,
        # sparing the hash of a Scope (Python code) on every request.
        where = (method, url.scheme, url.raw_host, url.explicit_port, url.raw_path_qs)
        key: tuple[object, ...] = (
            where if info_scope is None and wanted is _NO_SCOPE else (*where, info_scope, wanted)
        )
        now = self.now
        hot = self._standing(key, now)
        if hot is not None:
            return self.prepared(hot, facts, now)
        p = self.policy
        st = self.origins.state(facts.url, registry_host)
        required, _, api, want = self._scopes(facts)
        if not st.registry:
            if api:
                return None  # a first registry call: the flow marks the origin
            # Not a registry API call (a blob's CDN hop, say) to an origin that never
            # challenged: nothing to attach, so no config lookup or helper run for it.
            self.stats.requests += 1
            return Prepared(st, None, required, want, None, None, None, False, facts, self.now)
        if p.coalesce_first_contact and st.holds_back:
            return None
        ident_key = (st.key, self._namespace(st, required))
        ident = self._identities.get(ident_key)
        if ident is None:
            return None
        tok = self.cache.get(ident.partition, required, now)
        if tok is None or (p.refresh_ahead and tok.refresh_due(now, p.refresh_fraction)):
            return None
        self.stats.requests += 1
        self.stats.cache_hits += 1
        fraction = p.refresh_fraction if p.refresh_ahead else None
        self._hot[key] = Hit(
            st,
            st.key,
            self._generation,
            ident,
            tok,
            tok.fresh_until(fraction),
            required,
            want,
            tok.authorization,
            bool(url.raw_query_string),
        )
        if len(self._hot) > HOT_ENTRIES:
            del self._hot[next(iter(self._hot))]
        return Prepared(
            st, ident, required, want, tok, None, tok.authorization, False, facts, self.now
        )

    def _prepare(self, facts: RequestFacts) -> Generator[Effect, Any, Prepared | Fail]:
        """Everything before sending, with the effects it needs (lookups, waits, fetches)."""
        p = self.policy
        stats = self.stats
        stats.requests += 1
        st = self.origins.state(facts.url, registry_host)
        required, known, api, want = self._scopes(facts)
        if facts.wanted and not want:
            # Told here, not in _scopes: the hot path runs that too, and only this path
            # makes token requests.
            log.debug("wanted scope too large; leaving it out of token requests")
        if api and not st.registry:
            st = self.origins.apply(st, RegistryCallSeen())
        if not st.registry:
            return Prepared(st, None, required, want, None, None, None, False, facts, self.now)
        ident = yield from self._identity(st, required)
        st = self.origins.current(st)

        probe = False
        held: tuple[Hashable, str, int] | None = None
        try:
            # Only registry calls are held back: a CDN hop has no challenge to learn.
            while p.coalesce_first_contact and st.holds_back:
                if st.phase is Phase.NEW:
                    st = self.origins.apply(st, ProbeSent())
                    probe = True
                    break
                stats.first_contact_waits += 1
                if held is None and api:
                    # The probe's token request can ask for this request's scope too.
                    held = self._hold(ident.partition, "", required.union(want))
                yield AwaitProbe(st.url)
                st = self.origins.current(st)
        finally:
            if held is not None:
                self._unhold(held)

        sent = self.cache.get(ident.partition, required, self.now)
        if sent is not None:
            stats.cache_hits += 1
            if p.refresh_ahead and sent.refresh_due(self.now, p.refresh_fraction):
                refresh = self._refresh_ahead(st, ident, sent)
                if refresh is not None:
                    yield refresh
            auth = sent.authorization
            return Prepared(st, ident, required, want, sent, None, auth, probe, facts, self.now)
        stats.cache_misses += 1
        attach = yield from self._attach(st, ident, required, want, known)
        if isinstance(attach, Fail):
            return attach
        got, asked, attached, ident = attach
        return Prepared(st, ident, required, want, got, asked, attached, probe, facts, self.now)

    def settle(self, prep: Prepared, status: int) -> Pass:
        """The answer to a request when it is not a 401: nothing more to do."""
        if status == 429:
            # A rate limit is not an auth failure: passed back untouched, no refetch.
            self.stats.registry_429s += 1
        phase = prep.st.phase
        # st.holds_back, spelt out: no property call, and no Enum.__hash__ (Python code).
        if phase is Phase.NEW or phase is Phase.PROBING:
            self.origins.apply(prep.st, _ANSWERED)
        return _PASS

    def after(self, prep: Prepared, reply: Reply) -> RequestFlow:
        """What follows the registry's answer to a request sent as ``prep`` said."""
        if reply.status != 401:
            passed = self.settle(prep, reply.status)
            if reply.status == 403 and self._sent_own_basic(prep):
                # ECR answers an expired helper token 403 "Your authorization token
                # has expired", with no challenge.
                assert prep.ident is not None
                return (yield from self._basic_renewed(prep.st, prep.ident))
            return passed
        stats = self.stats
        st, ident, required, want = prep.st, prep.ident, prep.required, prep.want
        sent, asked, sent_at = prep.sent, prep.asked, prep.at
        stats.responses_401 += 1
        ch = select_challenge(parse_challenges(reply.challenges))
        st = self.origins.apply(st, Answered(ch))
        if ch is None:
            return Pass()
        if ident is None:
            ident = yield from self._identity(st, required)
            sent_at = -math.inf  # nothing of ours went with it: any cached token will do
        if ch.scheme == "basic":
            if self._sent_own_basic(prep):
                return (yield from self._basic_renewed(st, ident))
            if not ident.basic or prep.callers_authorization:
                return Pass()
            if sent is not None:
                # A refused token answered with a Basic challenge (Harbor does, once its
                # tokens are revoked: google/go-containerregistry#1744): the token is no
                # good, and the registry takes the credentials it names.
                self.cache.discard(ident.partition, sent)
            yield PrepareResend()
            reply = yield Resend(ident.basic)
            self.stats.retries_after_401 += 1
            if reply.status == 401:
                self.stats.responses_401 += 1
            if reply.status in (401, 403):
                return (yield from self._basic_renewed(st, ident))
            return Pass()
        ch_scope = parse_scope(ch.params.get("scope", ""))
        if sent is not None:
            self._forget(ident, sent, ch, ch_scope)
            if refused_by_its_own_claims(sent, asked, ch_scope):
                # The original's "401 with a freshly acquired token", without asking again.
                self.stats.refused_ahead += 1
                self.stats.rewritten_403 += 1
                return self._deny(st, ident)
        yield PrepareResend()
        # A challenge without a scope (Quay's) asks for nothing in particular: the token
        # must then hold the request's own scope, or any cached token (the latest, of
        # another repository) would do, and be refused.
        needed = required if ch_scope.is_empty() else ch_scope
        got = yield from self._acquire(
            st,
            ident,
            ch,
            needed,
            want.union(required),
            newer_than=sent_at,
            replacing=sent,
        )
        if isinstance(got, OCIAuthError) and self._creds_refused(ident, got):
            renewed = yield from self.renewed(st, ident)
            if renewed is not None:
                wider = want.union(required)
                got = yield from self._acquire(st, renewed, ch, needed, wider)
        if isinstance(got, OCIAuthError):
            return Fail(got)
        reply = yield Resend(got.authorization)
        self.stats.retries_after_401 += 1
        if reply.status == 401 and got in self._adopted:
            # Another process's token, refused: it may have been revoked since it was
            # shared, so the refusal is not final until a token of our own is refused.
            self.stats.responses_401 += 1
            self.cache.discard(ident.partition, got)
            yield PrepareResend()
            got = yield from self._acquire(
                st,
                ident,
                ch,
                ch_scope,
                want.union(required),
                newer_than=self.now,
                replacing=got,
            )
            if isinstance(got, OCIAuthError):
                return Fail(got)
            reply = yield Resend(got.authorization)
            self.stats.retries_after_401 += 1
        if reply.status == 401:
            self.stats.responses_401 += 1
            self.stats.rewritten_403 += 1
            return self._deny(st, ident)
        return Pass()

    def _requester(self, st: OriginState, ident: Identity, how: How) -> Requester:
        return Requester(st.host, how, ident.username, ident.source, ident.found)

    def _deny(self, st: OriginState, ident: Identity) -> Deny:
        """The 403 DENIED outcome, saying as whom the refused token was asked for."""
        how = self._asked_as.get(ident.partition)
        if how is None:
            # A token this core did not fetch (a shared cache's): as it would have asked.
            how = (
                "basic" if ident.basic else "refresh" if self.refresh_token(ident) else "anonymous"
            )
        who = self._requester(st, ident, how)
        refused = f"registry {st.host} refused a token"
        if who.anonymous:
            reason = f"{refused} asked for anonymously: {who.why_anonymous()}"
        else:
            reason = f"{refused} issued to {who.credentials()}{who.origin()}"
        log.info("answering 403 DENIED: %s", reason)
        return Deny(reason, who)

    @staticmethod
    def _sent_own_basic(prep: Prepared) -> bool:
        """The request went with the identity's Basic credentials (not the caller's)."""
        ident = prep.ident
        return (
            ident is not None
            and bool(ident.basic)
            and not prep.callers_authorization
            and prep.authorization == ident.basic
        )

    def _basic_renewed(self, st: OriginState, ident: Identity) -> RequestFlow:
        """The registry refused our Basic credentials: send once more with renewed ones."""
        renewed = yield from self.renewed(st, ident)
        if renewed is None or not renewed.basic:
            return _PASS
        yield PrepareResend()
        reply = yield Resend(renewed.basic)
        if reply.status == 401:
            self.stats.responses_401 += 1
        return _PASS

    def _attach(
        self,
        st: OriginState,
        ident: Identity,
        required: Scope,
        want: Scope,
        known: bool,
    ) -> Generator[Effect, Any, _Attached | Fail]:
        """What goes with a request no cached token holds:
        ``(token, asked, authorization, identity)``.

        ``asked`` is the scope the token was fetched with for this very request;
        ``identity`` is ``ident``, or the one it was renewed as.
        """
        ch = st.challenge
        if st.phase is Phase.BASIC and ch is not None:
            return None, None, ident.basic or None, ident
        if st.phase is not Phase.BEARER or ch is None:
            return None, None, None, ident
        refresh_token = self.refresh_token(ident)
        if not (refresh_token or (known and self.policy.authorize_ahead)):
            return None, None, None, ident
        # Until the origin's token server has granted a token fetched ahead, one fetch
        # ahead goes at a time: some grant only what the registry challenged for, and a
        # burst would be as many refusals (issue 11 item 4).
        unproven = self.policy.authorize_ahead and not st.ahead_worked
        if unproven:
            if st.ahead_refused or (yield from self._trial_refused(st, ident, ch, required)):
                return None, None, None, ident
            st = self.origins.current(st)
            unproven = not st.ahead_worked
        # With a refresh token the original acquires ahead too (and fails if it cannot).
        self.stats.fetches_ahead += 1
        got, joined = yield from self._obtain(
            st, ident, ch, required, want, -math.inf, unproven, None
        )
        if joined and isinstance(got, AccessToken) and not got.scope.contains(required):
            # The fetch joined got less than this request needs. If its server turned out
            # to read one scope parameter, this request's scope alone will be granted:
            # fetch it ahead. Otherwise (a wide scope refused, or granted in part) a fetch
            # ahead of its own is not worth it; the registry's challenge decides.
            if not self.origins.current(st).one_scope:
                return None, None, None, ident
            got = yield from self._acquire(st, ident, ch, required, want)
        if isinstance(got, OCIAuthError) and self._creds_refused(ident, got):
            renewed = yield from self.renewed(st, ident)
            if renewed is not None:
                ident = renewed
                got = yield from self._acquire(st, ident, ch, required, want)
        if isinstance(got, OCIAuthError):
            status = got.status if isinstance(got, TokenServerError) else None
            if not isinstance(got, TokenServerError) or not worth_asking_again(status):
                return Fail(got)
            if refresh_token and not self.policy.authorize_ahead:
                return Fail(got)
            self.stats.fetches_ahead_failed += 1
            log.debug("early token fetch for %s refused (%s); the challenge decides", st.host, got)
            self.origins.apply(st, FetchAheadRefused())
            return None, None, None, ident
        if unproven:
            self.origins.apply(st, FetchAheadWorked())
        return got, required.union(want), got.authorization, ident

    def _trial_refused(
        self, st: OriginState, ident: Identity, ch: Challenge, required: Scope
    ) -> Generator[Effect, Any, bool]:
        """Whether the origin's first fetch ahead, if one is under way, was refused.

        A request that would fetch a token of its own waits for it first (it
        joins that fetch); one that a fetch in flight serves does not wait. (No
        cached token serves the request: _prepare looked, just before.)
        """
        trial = self._trials.get(st.key)
        if trial is None:
            return False
        key, job = trial
        if key not in self._inflight:
            del self._trials[st.key]
            return False
        if self._joinable(ident.partition, ch.params.get("realm", ""), required) is not None:
            return False
        self.stats.ahead_waits += 1
        got = yield FetchToken(key, job)
        return isinstance(got, OCIAuthError) or self.origins.current(st).ahead_refused

    def _forget(self, ident: Identity, sent: AccessToken, ch: Challenge, ch_scope: Scope) -> None:
        """A token the registry refused: drop it, or narrow it when it only lacked some scope."""
        if ch.params.get("error") == "insufficient_scope" and not ch_scope.is_empty():
            self.cache.replace(ident.partition, sent, sent.narrowed(ch_scope))
        else:
            self.cache.discard(ident.partition, sent)

    def _refresh_ahead(
        self, st: OriginState, ident: Identity, tok: AccessToken
    ) -> RefreshInBackground | None:
        """A background refresh of ``tok`` (in the last part of its life), unless one runs."""
        ch = st.bearer
        if ch is None:
            return None
        key = FetchKey(
            ident.partition,
            ch.params.get("realm", ""),
            ch.params.get("service", ""),
            tok.scope,
            True,
        )
        if key in self._inflight:
            return None
        self._inflight.setdefault(key)
        self.stats.refreshes_ahead += 1
        return RefreshInBackground(key, FetchJob(st, ident, ch, tok.scope, tok.scope, tok))

    def _acquire(
        self,
        st: OriginState,
        ident: Identity,
        ch: Challenge,
        required: Scope,
        want: Scope,
        *,
        newer_than: float = -math.inf,
        trial: bool = False,
        replacing: AccessToken | None = None,
    ) -> Generator[Effect, Any, AccessToken | OCIAuthError]:
        """A token holding ``required`` (asking for ``want`` too), shared by concurrent requests.

        A cached token counts only if it was obtained after ``newer_than`` (the
        time the refused request went out): an older one is what was refused.
        ``trial``: a new fetch is the origin's first fetch ahead, which others wait for.
        When the fetch joined got less than ``required`` (a wide scope refused, or
        granted in part), this request's own scope is fetched.
        """
        got, joined = yield from self._obtain(
            st, ident, ch, required, want, newer_than, trial, replacing
        )
        if joined and isinstance(got, AccessToken) and not got.scope.contains(required):
            realm, service = ch.params.get("realm", ""), ch.params.get("service", "")
            key = self._joinable(ident.partition, realm, required) or FetchKey(
                ident.partition, realm, service, required
            )
            self._inflight.setdefault(key)
            got = yield FetchToken(key, FetchJob(st, ident, ch, required, required, replacing))
        return got

    def _obtain(
        self,
        st: OriginState,
        ident: Identity,
        ch: Challenge,
        required: Scope,
        want: Scope,
        newer_than: float,
        trial: bool,
        replacing: AccessToken | None,
    ) -> Generator[Effect, Any, tuple[AccessToken | OCIAuthError, bool]]:
        """A cached token, or the answer of a fetch made or joined (and whether joined)."""
        realm = ch.params.get("realm", "")
        service = ch.params.get("service", "")
        partition = ident.partition
        tok = self.cache.get(partition, required, self.now)
        if tok is not None and tok.issued_at >= newer_than:
            return tok, False
        key = self._joinable(partition, realm, required)
        coalesce = self.policy.coalesce_token_requests > 1 and not st.narrow_only
        if key is None and coalesce and (busy := self._busy(partition, realm)) is not None:
            # A fetch this request cannot join is out: wait for it once (at most one
            # token latency), then the next request asks for every scope held meanwhile.
            held = self._hold(partition, realm, required.union(want))
            self.stats.fetch_waits += 1
            try:
                yield FetchToken(busy, FetchJob(st, ident, ch, busy.scope, busy.scope))
            finally:
                self._unhold(held)
            st = self.origins.current(st)
            tok = self.cache.get(partition, required, self.now)
            if tok is not None and tok.issued_at >= newer_than:
                return tok, False
            key = self._joinable(partition, realm, required)
        joined = key is not None
        if key is None:
            # A server that refuses wide scopes is asked for the required one alone
            # (fetch_flow): a key claiming more would let others join in vain.
            scope = required if st.narrow_only else required.union(want)
            if coalesce:
                scope = self._coalesced(partition, realm, scope)
            key = FetchKey(partition, realm, service, scope)
            self._inflight.setdefault(key)
        job = FetchJob(st, ident, ch, required, key.scope, replacing)
        if trial and not joined:
            self._trials[st.key] = (key, job)
            while len(self._trials) > self.policy.max_origins:
                del self._trials[next(iter(self._trials))]
        got: AccessToken | OCIAuthError = yield FetchToken(key, job)
        return got, joined

    def _hold(self, partition: Hashable, realm: str, scope: Scope) -> tuple[Hashable, str, int]:
        """Note a waiting request's scope, for the next token request to ask for too."""
        self._tickets += 1
        self._held.setdefault((partition, realm), {})[self._tickets] = scope
        return partition, realm, self._tickets

    def _unhold(self, held: tuple[Hashable, str, int]) -> None:
        partition, realm, ticket = held
        waiting = self._held.get((partition, realm))
        if waiting is not None:
            waiting.pop(ticket, None)
            if not waiting:
                del self._held[(partition, realm)]

    def _busy(self, partition: Hashable, realm: str) -> FetchKey | None:
        """A fetch in flight (not a refresh) for the partition at the realm."""
        for k in self._inflight:
            if not k.refresh and k.partition == partition and k.realm == realm:
                return k
        return None

    def _coalesced(self, partition: Hashable, realm: str, scope: Scope) -> Scope:
        """``scope`` and the scopes held for the partition (the realm's, and those held by
        a first contact, which knows no realm yet), in the order they were held, up to
        ``coalesce_token_requests`` items and ``max_scope_bytes``."""
        p = self.policy
        waiting = [*self._held.get((partition, realm), {}).values()]
        if realm:
            waiting += self._held.get((partition, ""), {}).values()
        if not waiting:
            return scope
        items = len(scope) if not scope.is_unlimited() else p.coalesce_token_requests
        size = len(str(scope))
        extra: list[Scope] = []
        for held in waiting:
            if scope.contains(held) or held.is_unlimited():
                continue
            n, b = len(held), len(str(held)) + 1
            if items + n > p.coalesce_token_requests or size + b > p.max_scope_bytes:
                break
            extra.append(held)
            items += n
            size += b
        if not extra:
            return scope
        self.stats.coalesced_scopes += len(extra)
        for held in extra:
            scope = scope.union(held)
        return scope

    def _joinable(self, partition: Hashable, realm: str, required: Scope) -> FetchKey | None:
        """A fetch in flight that asks for everything ``required`` holds: its answer (even
        a subset grant) is what asking again would get."""
        for k in self._inflight:
            if (
                not k.refresh
                and k.partition == partition
                and k.realm == realm
                and k.scope.contains(required)
            ):
                return k
        return None

    # -- one token fetch -------------------------------------------------------

    def fetch_flow(self, job: FetchJob) -> FetchFlow:
        """One token fetch: the wide scope, then (if refused) the required scope alone."""
        self.stats.token_fetches += 1
        st = self.origins.get(job.origin.url) or job.origin
        plan = self._plan(st, job)
        if isinstance(plan, OCIAuthError):
            self.stats.token_fetch_failures += 1
            return plan
        realm_url, use_creds = plan
        scope = job.required if st.narrow_only else job.wanted
        got, ours = yield from self._ask(st, job, realm_url, use_creds, scope)
        if isinstance(got, TokenServerError) and got.status in REFUSALS and scope != job.required:
            # The spec says a subset grant is not an error, but some token servers
            # reject a request for more than they grant (401, as the original expects;
            # others answer 400 or 403, or 414 for a long query): ask for what is required.
            st = self.origins.apply(st, WideScopeRefused())
            scope = job.required
            got, ours = yield from self._ask(st, job, realm_url, use_creds, scope)
        partition = job.identity.partition
        if isinstance(got, OCIAuthError):
            self.stats.token_fetch_failures += 1
            if ours and isinstance(got, TokenServerError) and got.status in (401, 403):
                # Our own credentials refused: they may have expired (AuthCore.renewed).
                self._refused_creds[partition] = None
                while len(self._refused_creds) > self.policy.max_origins:
                    del self._refused_creds[next(iter(self._refused_creds))]
            return got
        if ours:
            self._refused_creds.pop(partition, None)
        answer, now = got, self.now
        if answer.refresh_token and ours:
            # Only an answer to this identity's own credentials may change who it is: a
            # realm asked anonymously (by policy, or for want of credentials) hands out
            # a refresh token to anyone, and it is not ours to keep.
            self._keep(self._refresh, job.identity.partition, answer.refresh_token)
        granted = granted_scope(answer.token)
        if (
            granted is not None
            and not granted.contains(job.required)
            and not st.one_scope
            and len(str(scope).split()) > 1
        ):
            # Some token servers read one ``scope`` parameter of several (older GitLab
            # keeps the last, estesp/manifest-tool#53; Harbor and Portus did too): ask
            # for what is required alone, in one parameter. If that is granted, the
            # server reads one scope, and this origin is not asked wide again.
            narrow, narrow_ours = yield from self._ask(
                st, job, realm_url, use_creds, job.required, joined=True
            )
            if not isinstance(narrow, OCIAuthError):
                narrow_granted = granted_scope(narrow.token)
                if narrow_granted is not None and narrow_granted.contains(job.required):
                    log.debug("token server for %s reads one scope parameter", st.host)
                    st = self.origins.apply(st, WideScopeRefused(one_scope=True))
                    answer, scope, granted = narrow, job.required, narrow_granted
                    if answer.refresh_token and narrow_ours:
                        self._keep(self._refresh, job.identity.partition, answer.refresh_token)
        if granted is not None and not granted.contains(scope):
            # A subset grant (allowed by the spec): cache what the token can really do,
            # so it is neither sent in vain for the rest nor refetched for what it has.
            log.debug("token for %s grants only %r of %r", st.host, str(granted), str(scope))
            scope = new_scope(*(rs for rs in scope if rs in granted))
        tok = AccessToken(answer.token, scope, now, now + answer.expires_in, granted is not None)
        self.cache.put(job.identity.partition, tok)
        log.debug("token for %s scope=%r expires_in=%.0fs", st.host, str(scope), answer.expires_in)
        return tok

    def _plan(self, st: OriginState, job: FetchJob) -> tuple[URL, bool] | OCIAuthError:
        """Where the token request goes and whether credentials go with it."""
        verdict = self._verdict(st, job)
        if isinstance(verdict, OCIAuthError):
            return verdict
        use_creds = verdict.decision is RealmDecision.CREDENTIALS
        if not use_creds and (job.identity.basic or self.refresh_token(job.identity)):
            self.stats.anonymous_realm_downgrades += 1
            log.warning(
                "realm for %s is not trusted with credentials (%s); asking anonymously",
                st.host,
                verdict.reason,
            )
        return verdict.url, use_creds

    def fetch_uses_credentials(self, job: FetchJob) -> bool | None:
        """Whether the fetch of ``job`` would send the identity's credentials to its realm
        (False: it would ask anonymously), or None when it would make no token request
        (no realm, or one the realm policy refuses). Decides nothing and counts nothing:
        a shared cache asks it to file a token under the right identity."""
        st = self.origins.get(job.origin.url) or job.origin
        verdict = self._verdict(st, job)
        if isinstance(verdict, OCIAuthError):
            return None
        ident = job.identity
        creds = bool(ident.basic or self.refresh_token(ident))
        return creds and verdict.decision is RealmDecision.CREDENTIALS

    def _verdict(self, st: OriginState, job: FetchJob) -> RealmVerdict | OCIAuthError:
        """The realm policy's verdict on the challenge's realm (made absolute)."""
        realm = job.challenge.params.get("realm", "")
        if not realm:
            return ChallengeError(
                f"malformed Www-Authenticate header from {st.host} (missing realm)",
                registry=st.host,
                step="challenge",
            )
        try:
            if not URL(realm).is_absolute():
                # A relative realm (seen in the wild) is relative to the registry.
                realm = str(st.url.join(URL(realm)))
        except (ValueError, TypeError, IndexError, UnicodeError):
            pass  # check_realm refuses what does not parse
        verdict = check_realm(st.url, realm, self.policy.realm_policy)
        if verdict.decision is RealmDecision.REFUSE:
            return RealmPolicyError(
                f"refusing token request for {st.host}: {verdict.reason}",
                registry=st.host,
                step="realm",
            )
        return verdict

    def _ask(
        self,
        st: OriginState,
        job: FetchJob,
        realm: URL,
        use_creds: bool,
        scope: Scope,
        *,
        joined: bool = False,
    ) -> Generator[TokenCall, TokenReply, tuple[TokenResponse | OCIAuthError, bool]]:
        """One token request for ``scope``: the refresh grant (POST) when there is a refresh
        token, falling back to GET where the server has no OAuth2 endpoint. Also says
        whether the answer came to the identity's own credentials."""
        service = job.challenge.params.get("service", "")
        local = on_this_machine(st.url.host or "")
        refresh_token = self.refresh_token(job.identity) if use_creds else ""
        if refresh_token:
            form = refresh_grant_form(refresh_token, scope, service)
            reply = yield TokenCall("post_refresh", "POST", realm, form, None, local, st.host)
            # Not all token servers speak OAuth2 (404); GHCR answers POST with 405.
            if reply.status not in (404, 405) or reply.error is not None:
                return self._answer(st, realm, reply, job.identity, "refresh"), True
        auth = job.identity.basic if use_creds and job.identity.basic else None
        how: How = "basic" if auth is not None else self._anonymous(job.identity, use_creds)
        kind = "get_basic" if auth is not None else "get_anonymous"
        url = token_get_url(realm, scope, service, joined=joined or st.one_scope)
        reply = yield TokenCall(kind, "GET", url, None, auth, local, st.host)
        return self._answer(st, realm, reply, job.identity, how), auth is not None

    def _anonymous(self, ident: Identity, use_creds: bool) -> How:
        """Why a token request goes without credentials (a :class:`Requester`'s ``how``)."""
        if not use_creds and (ident.basic or self.refresh_token(ident)):
            return "withheld"
        return "anonymous"

    def _answer(
        self, st: OriginState, realm: URL, reply: TokenReply, ident: Identity, how: How
    ) -> TokenResponse | OCIAuthError:
        """The token server's reply as a value; a token answer also records how the
        identity's token was asked for, for the DENIED a refusal of it may become."""
        if reply.error is not None:
            return reply.error
        if reply.status != 200:
            return self._refused(st, realm, reply.status, self._requester(st, ident, how))
        try:
            answer = parse_token_response(reply.body, registry=st.host)
        except TokenResponseError as exc:
            return exc
        self._keep(self._asked_as, ident.partition, how)
        return answer

    @staticmethod
    def _refused(
        st: OriginState, realm: URL, status: int | None, who: Requester
    ) -> TokenServerError:
        """The error for a token server's answer other than 200: a 401 or 403 says whose
        credentials it refused and where they came from, or why none went."""
        server = f"token server {realm.host_port_subcomponent or realm.host}"
        if status not in (401, 403):
            message = f"{server} for {st.host} answered {status}"
        elif who.anonymous:
            message = (
                f"{server} answered {status} to an anonymous request for registry {st.host}: "
                f"{who.why_anonymous()}"
            )
        else:
            message = (
                f"{server} refused {who.credentials()} for registry {st.host}{who.origin()}: "
                f"{status}"
            )
        return TokenServerError(
            message,
            registry=st.host,
            step="token",
            status=status,
            username=who.username,
            credential_source=who.source,
            anonymous=who.anonymous,
            credentials_found=who.found,
        )
