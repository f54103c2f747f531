"""The auth flow's decisions, free of I/O: what to ask a token server, when to retry,
what a refusal means. The middleware (the aiohttp adapter) acts on them.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import time
from collections.abc import Iterable

from yarl import URL

from aociauth.scope import ACTION_PUSH, TYPE_REPOSITORY, Scope
from aociauth.tokens import AccessToken

__all__ = [
    "OAUTH_CLIENT_ID",
    "PRESIGNED_KEYS",
    "REFUSALS",
    "backoff",
    "basic_authorization",
    "host_key",
    "is_presigned",
    "primary_repository",
    "refresh_grant_form",
    "refused_by_its_own_claims",
    "retry_after",
    "token_get_url",
    "worth_asking_again",
]

#: The OAuth2 client id sent with refresh-token grants (the original sends its own name).
OAUTH_CLIENT_ID = "aociauth"

#: Token-server answers to a wide scope after which the required scope alone is asked for.
#: The original expects 401; others answer 400 or 403, or 413/414/431 for a long query.
REFUSALS = frozenset({400, 401, 403, 413, 414, 431})


def host_key(url: URL) -> str:
    """The registry name the config is asked about: host, plus the port when one is given."""
    host = url.raw_host or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{url.explicit_port}" if url.explicit_port is not None else host


@functools.lru_cache(maxsize=16384)
def primary_repository(scope: Scope) -> str:
    """The repository a request is about: the one it pushes to, else the only one it names."""
    repos = [rs for rs in scope if rs.resource_type == TYPE_REPOSITORY]
    for rs in repos:
        if rs.action == ACTION_PUSH:
            return rs.resource
    names = {rs.resource for rs in repos}
    return names.pop() if len(names) == 1 else ""


def retry_after(value: str | None, cap: float, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, min(when.timestamp() - (time.time() if now is None else now), cap))


def backoff(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Exponential backoff for retry ``attempt`` (0-based), scaled by ``jitter``, capped.

    ``jitter`` is a random number in [0, 1): the wait is 0.5 to 1.5 times the step,
    so concurrent clients do not retry in lockstep; no wait is longer than ``cap``.
    """
    return min(cap, base * 2.0**attempt * (0.5 + jitter))


def worth_asking_again(status: int | None) -> bool:
    """After a token fetch done ahead of the 401 failed with ``status``: may the
    registry's own challenge still succeed? Only a refusal (a 4xx other than 429)
    may be about the scope we guessed; a server that is down was already retried."""
    return status is not None and 400 <= status < 500 and status != 429


def basic_authorization(username: str, password: str) -> str:
    """An RFC 7617 Basic Authorization value (UTF-8, as docker/cli sends it)."""
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def token_get_url(realm: URL, scope: Scope, service: str) -> URL:
    """The token GET: the realm plus one ``scope`` parameter per item, and ``service``.

    Items are the scope's string split on spaces, so a challenge's exact string
    (which some token servers insist on) is what is asked for.
    """
    query: list[tuple[str, str]] = list(realm.query.items())
    query += [("scope", item) for item in str(scope).split(" ") if item]
    if service:
        query.append(("service", service))
    return realm.with_query(query)


def refresh_grant_form(refresh_token: str, scope: Scope, service: str) -> dict[str, str]:
    """The OAuth2 refresh-token grant's form (the original's fields)."""
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": OAUTH_CLIENT_ID,
        "scope": str(scope),
    }
    if service:
        form["service"] = service
    return form


def refused_by_its_own_claims(sent: AccessToken, asked: Scope | None, wanted: Scope) -> bool:
    """A 401 after ``sent`` is final: fetched for this request (``asked`` is what it asked
    for, None when it came from the cache), it asked for all the registry ``wanted``,
    and its own claims show less. Asking again would get the same."""
    return (
        asked is not None
        and sent.introspected
        and asked.contains(wanted)
        and not sent.scope.contains(wanted)
    )


#: Query keys of pre-signed storage URLs (S3, GCS, Azure SAS, CloudFront): a blob
#: redirect's signature is a credential for that blob (google/go-containerregistry#1408).
PRESIGNED_KEYS = frozenset(
    {
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "googleaccessid",
        "signature",
        "sig",
        "access_token",
        "token",
        "key-pair-id",
        "policy",
    }
)


def is_presigned(url: URL) -> bool:
    """Whether a URL carries a pre-signed storage signature in its query."""
    return bool(url.query) and not PRESIGNED_KEYS.isdisjoint(_lower(url.query))


def _lower(keys: Iterable[str]) -> Iterable[str]:
    return (k.lower() for k in keys)
