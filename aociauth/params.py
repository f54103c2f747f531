"""The middleware's parameters: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aociauth.core.flow import FlowPolicy
from aociauth.realm import RealmPolicy
from aociauth.stats import AuthStats

if TYPE_CHECKING:
    import aiohttp

    from aociauth.config import Config
    from aociauth.shared_cache import SharedTokenStore

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
    #: Seconds before refused credentials of a credential helper are asked for again
    #: (per registry and namespace; the README's section on credential helpers).
    helper_rerun_interval: float = 60.0
    #: Seconds between checks of a ``ConfigFile``'s files for changes (a ``docker
    #: login`` while the program runs); 0 checks before every request, ``math.inf`` never.
    config_check_interval: float = 1.0
    #: A second token-cache tier shared by processes (for example
    #: :class:`aociauth.redis.RedisTokenStore`): a local miss looks there before asking
    #: a token server, and a fetched token is written back. None: this process alone.
    shared_cache: SharedTokenStore | None = None
    #: Concurrent token misses for one registry and identity share a token request of
    #: up to this many scope items (1: every miss asks alone, as the original does).
    #: A token's size grows with its scope, and it goes with every later request: at 50
    #: a cold burst over 100 repositories makes 2 token requests and its tokens stay near
    #: 5 KB, under the 8 KB header limits of common servers (docs/benchmarks.md).
    coalesce_token_requests: int = 50

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
            "coalesce_token_requests": 1,
        }
        base.update(kwargs)
        return cls(**base)

    def flow_policy(self) -> FlowPolicy:
        """The settings the I/O-free core decides with."""
        return FlowPolicy(
            realm_policy=self.realm_policy,
            infer_scopes=self.infer_scopes,
            authorize_ahead=self.authorize_ahead,
            coalesce_first_contact=self.coalesce_first_contact,
            refresh_ahead=self.refresh_ahead,
            refresh_fraction=self.refresh_fraction,
            max_scope_items=self.max_scope_items,
            max_scope_bytes=self.max_scope_bytes,
            cache_size=self.cache_size,
            helper_rerun_interval=self.helper_rerun_interval,
            coalesce_token_requests=self.coalesce_token_requests,
        )
