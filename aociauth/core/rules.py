"""The auth flow's rules as plain functions: values in, a decision out.

No I/O, no clock (``now`` is a parameter), no state. Each is pinned by a
table-driven test in ``tests/test_core_rules.py``.
"""

from __future__ import annotations

import base64
import functools

from yarl import URL

from aociauth.scope import ACTION_PUSH, TYPE_REPOSITORY, Scope
from aociauth.tokens import AccessToken

__all__ = [
    "OAUTH_CLIENT_ID",
    "REFUSALS",
    "backoff",
    "basic_authorization",
    "bounded_want",
    "is_retryable",
    "primary_repository",
    "refresh_grant_form",
    "refused_by_its_own_claims",
    "registry_host",
    "required_scope",
    "token_get_url",
    "worth_asking_again",
]

#: The OAuth2 client id sent with refresh-token grants (the original sends its own name).
OAUTH_CLIENT_ID = "aociauth"

#: Token-server answers to a wide scope after which the required scope alone is asked for.
#: The original expects 401; others answer 400 or 403, or 413/414/431 for a long query.
REFUSALS = frozenset({400, 401, 403, 413, 414, 431})


def registry_host(url: URL) -> str:
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


def required_scope(
    inferred: Scope | None, info: Scope | None, *, infer: bool
) -> tuple[Scope, bool, bool]:
    """What a request needs: ``(scope, known, registry_api)``.

    ``inferred`` is the scope read from its method and path (None: not a
    registry API route); ``info`` the caller's ``RequestInfo`` (None: unset),
    which wins and marks the request as a registry call whatever its path.
    With inference off, an inferred scope still says the request is a
    registry call (so credentials are looked up) but is not used.
    """
    if info is not None:
        return info, True, True
    if inferred is not None and infer:
        return inferred, True, True
    return Scope(), False, inferred is not None


def bounded_want(want: Scope, max_items: int, max_bytes: int) -> Scope:
    """A ``with_scope`` scope fit to add to token requests, or the empty scope.

    Bounded: thousands of items make a token request servers refuse (8 KiB
    request lines are common), and are an amplification in themselves. The
    unlimited scope is never asked for on a caller's behalf.
    """
    if want.is_empty():
        return want
    if want.is_unlimited() or len(want) > max_items or len(str(want)) > max_bytes:
        return Scope()
    return want


def backoff(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Exponential backoff for retry ``attempt`` (0-based), scaled by ``jitter``, capped.

    ``jitter`` is a random number in [0, 1): the wait is 0.5 to 1.5 times the step,
    so concurrent clients do not retry in lockstep; no wait is longer than ``cap``.
    """
    return min(cap, base * 2.0 ** min(attempt, 64) * (0.5 + jitter))


def is_retryable(status: int | None) -> bool:
    """Whether a token request that ended so is worth another attempt:
    a rate limit (429), a server error (5xx), or no answer at all (None)."""
    return status is None or status == 429 or status >= 500


def worth_asking_again(status: int | None) -> bool:
    """After a token fetch done ahead of the 401 failed with ``status``: may the
    registry's own challenge still succeed? Only a refusal (a 4xx other than 429)
    may be about the scope we guessed; a server that is down was already retried."""
    return status is not None and 400 <= status < 500 and status != 429


def basic_authorization(username: str, password: str) -> str:
    """An RFC 7617 Basic Authorization value (UTF-8, as docker/cli sends it)."""
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def token_get_url(realm: URL, scope: Scope, service: str, *, joined: bool = False) -> URL:
    """The token GET: the realm plus one ``scope`` parameter per item, and ``service``.

    Items are the scope's string split on spaces, so a challenge's exact string
    (which some token servers insist on) is what is asked for. ``joined`` puts
    them in one space-separated parameter, for a token server that reads one.
    """
    query: list[tuple[str, str]] = list(realm.query.items())
    items = [item for item in str(scope).split(" ") if item]
    if joined and items:
        query.append(("scope", " ".join(items)))
    else:
        query += [("scope", item) for item in items]
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
