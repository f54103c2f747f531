"""Access tokens: reading a token server's answer, and the indexed token cache.

Pure code: no I/O, no clock of its own (callers pass ``now``, a monotonic time).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

from aociauth._redact import mask, token_repr
from aociauth.errors import TokenResponseError
from aociauth.scope import ResourceScope, Scope, new_scope

__all__ = [
    "DEFAULT_EXPIRES_IN",
    "MAX_EXPIRES_IN",
    "MAX_TOKEN_LENGTH",
    "AccessToken",
    "TokenCache",
    "TokenResponse",
    "decode_jwt_segment",
    "granted_scope",
    "jwt_claims",
    "parse_token_response",
]

#: The token spec: "When omitted, this defaults to 60 seconds."
DEFAULT_EXPIRES_IN = 60.0
#: A token server's claim of a longer life is not believed: a day is plenty,
#: and a bound keeps a bogus huge value from turning into an overflow.
MAX_EXPIRES_IN = 86_400.0
#: JWTs with large access lists run to a few KiB; 32 KiB leaves room and
#: still refuses a body that is one huge string.
MAX_TOKEN_LENGTH = 32 * 1024
#: Refresh tokens are sent in a form body, never in a header, but are still
#: bounded and must be printable.
MAX_REFRESH_TOKEN_LENGTH = 32 * 1024

# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")
# RFC 4648 section 5, with at most two '=' of padding.
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


@dataclass(frozen=True)
class TokenResponse:
    """What a token server's successful answer says, validated."""

    token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: float

    def __repr__(self) -> str:
        return (
            f"TokenResponse(token={mask(self.token)}, refresh_token="
            f"{mask(self.refresh_token)}, expires_in={self.expires_in})"
        )


def _expires_in(value: object) -> float:
    # bool is an int in Python; a JSON true is not a lifetime.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return DEFAULT_EXPIRES_IN
    if isinstance(value, int) and value > MAX_EXPIRES_IN:
        return MAX_EXPIRES_IN  # before float(): a 400-digit integer overflows it
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        return DEFAULT_EXPIRES_IN
    return min(v, MAX_EXPIRES_IN)


def parse_token_response(body: bytes, *, registry: str) -> TokenResponse:
    """Validate a token server's 200 answer.

    The body must be a JSON object whatever the Content-Type says (JSON sent
    as text/plain is accepted). ``token`` is preferred to ``access_token``
    (as in the original). The token must be RFC 6750 ``b64token`` characters
    and at most :data:`MAX_TOKEN_LENGTH` long, so nothing it holds can inject
    a header. Messages never quote the body.
    """

    def fail(why: str) -> TokenResponseError:
        return TokenResponseError(
            f"token server for {registry} answered with {why}",
            registry=registry,
            step="token",
            status=200,
        )

    try:
        data = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise fail("a body that is not JSON") from None
    if not isinstance(data, dict):
        raise fail("JSON that is not an object")
    token = data.get("token")
    if not isinstance(token, str) or not token:
        token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise fail("no token (neither 'token' nor 'access_token')")
    if len(token) > MAX_TOKEN_LENGTH:
        raise fail(f"a token longer than {MAX_TOKEN_LENGTH} characters")
    if not _B64TOKEN.fullmatch(token):
        raise fail("a token with characters outside RFC 6750 b64token")
    refresh = data.get("refresh_token", "")
    if not isinstance(refresh, str):
        refresh = ""
    if refresh and (len(refresh) > MAX_REFRESH_TOKEN_LENGTH or not _PRINTABLE.fullmatch(refresh)):
        raise fail("a malformed refresh token")
    return TokenResponse(
        token=token, refresh_token=refresh, expires_in=_expires_in(data.get("expires_in"))
    )


def decode_jwt_segment(segment: str) -> bytes:
    """Decode one segment of a compact JWS: base64url (RFC 7515 section 2).

    The RFC omits the padding; a segment padded correctly is taken too, as
    padding changes no byte and refusing it would only hide a grant. Anything
    outside the base64url
    alphabet (``+``, ``/``, whitespace), a wrong padding or an impossible
    length raises :class:`ValueError`.
    """
    if not _B64URL.fullmatch(segment) or len(segment.rstrip("=")) % 4 == 1:
        raise ValueError("a JWT segment that is not base64url")
    if "=" in segment and len(segment) % 4:
        raise ValueError("a JWT segment with a wrong padding")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as exc:
        raise ValueError("a JWT segment that is not base64url") from exc


def jwt_claims(token: str) -> dict[str, object] | None:
    """The claims of a compact JWS ``token``, unverified; None when it is not one.

    The one reader of a token's claims, for the cache (:func:`granted_scope`)
    and the command line's display: three segments, a base64url payload
    (:func:`decode_jwt_segment`) of UTF-8 JSON (RFC 7519 section 7.2) that is an
    object. A token longer than :data:`MAX_TOKEN_LENGTH` is not read, so a
    hostile value costs no more than the longest token a server may send.
    """
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    try:
        claims = json.loads(decode_jwt_segment(parts[1]).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return claims if isinstance(claims, dict) else None


def granted_scope(token: str) -> Scope | None:
    """What a distribution-style JWT says it grants (its ``access`` claim), or None.

    Token servers may grant a subset of what was asked ("it must not be
    considered an error", says the token spec), and the only place a client can
    see which subset is the token itself. The claim is read, not trusted: it only
    narrows what the cache believes a token can do, so an unreadable or foreign
    claim means "unknown" (None) and changes nothing.
    """
    claims = jwt_claims(token)
    if claims is None:
        return None
    access = claims.get("access")
    if not isinstance(access, list):
        return None
    items: list[ResourceScope] = []
    for entry in access:
        if not isinstance(entry, dict):
            return None
        rtype, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
        if not isinstance(rtype, str) or not isinstance(name, str) or not isinstance(actions, list):
            return None
        items.extend(ResourceScope(rtype, name, a) for a in actions if isinstance(a, str))
    return new_scope(*items)


@dataclass(frozen=True, eq=False)
class AccessToken:
    """A bearer token and the scope it was issued for.

    ``issued_at`` and ``expires_at`` are monotonic times (``loop.time()``).
    Compared by identity: two fetches never make "the same" token.
    """

    value: str = field(repr=False)
    scope: Scope
    issued_at: float
    expires_at: float
    #: True when ``scope`` is what the token itself says it grants (see granted_scope).
    introspected: bool = False

    def __repr__(self) -> str:
        return token_repr("AccessToken", str(self.scope), self.expires_at)

    @functools.cached_property
    def authorization(self) -> str:
        """The ``Authorization`` value that sends this token (built once)."""
        return f"Bearer {self.value}"

    @property
    def lifetime(self) -> float:
        """Seconds between issue and expiry."""
        return self.expires_at - self.issued_at

    def usable(self, now: float, margin: float = 1.0) -> bool:
        """Still good for a request sent now: the original drops tokens expiring within 1 s."""
        return now + margin < self.expires_at

    def fresh_until(self, fraction: float | None = None, margin: float = 1.0) -> float:
        """The time until which the token is :meth:`usable` and, with a ``fraction``,
        not :meth:`refresh_due`."""
        until = self.expires_at - margin
        life = self.lifetime
        if fraction is not None and math.isfinite(life):
            until = min(until, self.expires_at - life * fraction)
        return until

    def refresh_due(self, now: float, fraction: float) -> bool:
        """In the last ``fraction`` of its life (and of a finite life at all)."""
        life = self.lifetime
        return math.isfinite(life) and now >= self.expires_at - life * fraction

    def narrowed(self, without: Scope) -> AccessToken | None:
        """This token with ``without`` taken out of the scope it is trusted for."""
        if self.scope.is_unlimited():
            return self
        kept = [rs for rs in self.scope if rs not in without]
        if not kept:
            return None
        return AccessToken(
            self.value, new_scope(*kept), self.issued_at, self.expires_at, self.introspected
        )


_ANY = ("", "")  # bucket of tokens that cover no single resource (unlimited, empty)


class TokenCache:
    """Tokens indexed by partition and resource, bounded, least recently used out first.

    A partition is whatever separates identities (origin and credentials): a
    token is never found under another partition. Each token is indexed under
    every ``(type, resource)`` its scope names, so a lookup inspects only the
    tokens of the first resource the wanted scope names, plus the partition's
    tokens of unlimited scope: its cost does not grow with the number of
    tokens cached. Expired tokens are dropped when met, and the least recently
    used token goes when ``max_entries`` is reached.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._lru: OrderedDict[AccessToken, Hashable] = OrderedDict()
        self._buckets: dict[tuple[Hashable, str, str], list[AccessToken]] = {}
        self._latest: dict[Hashable, AccessToken] = {}

    def __len__(self) -> int:
        return len(self._lru)

    @staticmethod
    def _keys(partition: Hashable, scope: Scope) -> list[tuple[Hashable, str, str]]:
        if scope.is_unlimited() or scope.is_empty():
            return [(partition, *_ANY)]
        seen: dict[tuple[Hashable, str, str], None] = {}
        for rs in scope:
            seen[(partition, rs.resource_type, rs.resource)] = None
        return list(seen)

    def put(self, partition: Hashable, token: AccessToken) -> None:
        """Add a token, dropping those of its resources that had expired when it was
        issued; evict the least recently used one past the bound."""
        keys = self._keys(partition, token.scope)
        # A lookup stops at the newest match, so an expired token behind it would be
        # kept until the bound evicted it: with wide tokens (shared token requests)
        # that is megabytes held for nothing.
        expired = {
            old
            for key in keys
            for old in self._buckets.get(key, ())
            if not old.usable(token.issued_at)
        }
        for old in expired:
            self.discard(partition, old)
        for key in keys:
            self._buckets.setdefault(key, []).insert(0, token)
        self._lru[token] = partition
        self._latest[partition] = token
        while len(self._lru) > self.max_entries:
            old, part = self._lru.popitem(last=False)
            self._unindex(part, old)

    def discard(self, partition: Hashable, token: AccessToken) -> None:
        """Forget a token (for example one the registry called invalid)."""
        if self._lru.pop(token, None) is not None:
            self._unindex(partition, token)

    def replace(self, partition: Hashable, old: AccessToken, new: AccessToken | None) -> None:
        """Swap a token for a narrowed copy (or drop it when ``new`` is None)."""
        self.discard(partition, old)
        if new is not None:
            self.put(partition, new)

    def _unindex(self, partition: Hashable, token: AccessToken) -> None:
        for key in self._keys(partition, token.scope):
            bucket = self._buckets.get(key)
            if bucket is None:
                continue
            if token in bucket:
                bucket.remove(token)
            if not bucket:
                del self._buckets[key]
        if self._latest.get(partition) is token:
            del self._latest[partition]

    def get(
        self, partition: Hashable, scope: Scope, now: float, *, exclude: AccessToken | None = None
    ) -> AccessToken | None:
        """A usable token of ``partition`` whose scope contains ``scope``, or None."""
        candidates: tuple[AccessToken, ...] | list[AccessToken] = ()
        if scope.is_empty():
            latest = self._latest.get(partition)
            if latest is not None:
                candidates = [latest]
        elif not scope.is_unlimited():
            first = next(iter(scope))
            candidates = self._buckets.get((partition, first.resource_type, first.resource), ())
        unlimited = self._buckets.get((partition, *_ANY))
        if unlimited:
            candidates = [*candidates, *unlimited]
        # A copy: discarding an expired token changes the bucket being read.
        for tok in tuple(candidates):
            if not tok.usable(now):
                self.discard(partition, tok)
                continue
            if tok is not exclude and tok.scope.contains(scope):
                self._lru.move_to_end(tok)
                return tok
        return None

    @property
    def recency(self) -> OrderedDict[AccessToken, Hashable]:
        """The cached tokens, least recently used first, each with its partition; for a
        caller's hot path, which moves a token it uses to the end (no other change)."""
        return self._lru

    def touch(self, token: AccessToken) -> bool:
        """Whether ``token`` is still cached; if so, it counts as just used."""
        try:
            self._lru.move_to_end(token)
        except KeyError:
            return False
        return True

    def clear(self) -> None:
        """Forget every token."""
        self._lru.clear()
        self._buckets.clear()
        self._latest.clear()
