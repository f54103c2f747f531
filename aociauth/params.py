"""The middleware's parameters and counters: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import aiohttp

from aociauth.config import Config
from aociauth.realm import RealmPolicy

__all__ = ["AuthStats", "StdTransportParams"]


@dataclass(frozen=True)
class StdTransportParams:
    """How the middleware finds credentials, talks to token servers, and which policies it follows.

    ``config`` and ``session`` are the Go ``StdTransportParams`` fields
    (``session`` stands in for ``Transport``: token requests go through it,
    always with ``middlewares=()``; None means a session the middleware owns).
    The rest have secure, round-trip-saving defaults. :meth:`original_policy`
    gives the Go original's behaviour, for comparison.
    """

    config: Config | None = None
    session: aiohttp.ClientSession | None = None
    #: Where credentials may be sent; see :class:`aociauth.RealmPolicy`.
    realm_policy: RealmPolicy = field(default_factory=RealmPolicy)
    #: Seconds a token request (connect, send, read) may take, per attempt.
    token_timeout: float = 30.0
    #: Largest token-server body read, in bytes.
    max_token_response: int = 1024 * 1024
    #: Attempts at a token request that meets 429, 5xx or a connection error.
    token_attempts: int = 3
    #: First backoff, and the cap on any single wait (Retry-After included), in seconds.
    retry_backoff: float = 0.2
    retry_max_wait: float = 10.0
    #: Token cache bound (entries, least recently used evicted).
    cache_size: int = 10_000
    #: Infer the required scope from the request path when no RequestInfo is set.
    infer_scopes: bool = True
    #: Fetch a token before sending, once a registry's Bearer challenge is known.
    authorize_ahead: bool = True
    #: A burst to a registry not yet contacted sends one request first.
    coalesce_first_contact: bool = True
    #: Refresh tokens in the background in the last part of their life.
    refresh_ahead: bool = True
    #: The part of a token's life in which it is refreshed ahead.
    refresh_fraction: float = 0.15
    #: Hold one lock per registry across token fetches (the original's behaviour).
    serialize_token_fetches: bool = False
    #: A ``with_scope`` of more items, or a longer string, is not added to token requests.
    max_scope_items: int = 256
    max_scope_bytes: int = 4096

    @classmethod
    def original_policy(cls, **kwargs: Any) -> StdTransportParams:
        """Parameters that behave like the Go original: no inference, no fetch ahead,
        no first-contact coalescing, no refresh ahead, one lock per registry."""
        base: dict[str, Any] = {
            "infer_scopes": False,
            "authorize_ahead": False,
            "coalesce_first_contact": False,
            "refresh_ahead": False,
            "serialize_token_fetches": True,
        }
        base.update(kwargs)
        return cls(**base)


@dataclass
class AuthStats:
    """Counters of what the middleware did, to assert on and to log.

    ``token_requests`` counts HTTP requests sent to token servers (retries
    included) by kind: ``get_basic``, ``get_anonymous``, ``post_refresh``.
    """

    requests: int = 0
    responses_401: int = 0
    registry_429s: int = 0
    retries_after_401: int = 0
    rewritten_403: int = 0
    token_requests: dict[str, int] = field(default_factory=dict)
    token_fetches: int = 0
    token_fetch_failures: int = 0
    token_server_retries: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    fetches_ahead: int = 0
    fetches_ahead_failed: int = 0
    refused_ahead: int = 0
    first_contact_waits: int = 0
    refreshes_ahead: int = 0
    config_lookups: int = 0
    helper_runs: int = 0
    anonymous_realm_downgrades: int = 0

    @property
    def total_token_requests(self) -> int:
        """All HTTP requests sent to token servers."""
        return sum(self.token_requests.values())

    def as_dict(self) -> dict[str, Any]:
        """A plain copy, for printing or JSON."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["token_requests"] = dict(self.token_requests)
        out["total_token_requests"] = self.total_token_requests
        return out
