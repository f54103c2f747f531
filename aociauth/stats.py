"""What the middleware did, counted: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["AuthStats"]


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
    #: Requests that waited for a registry's first fetch ahead, to learn whether its
    #: token server grants tokens fetched ahead of the challenge.
    ahead_waits: int = 0
    refused_ahead: int = 0
    first_contact_waits: int = 0
    #: Scopes of other waiting requests added to a token request (coalesced misses).
    coalesced_scopes: int = 0
    #: Requests that waited for a token fetch they could not join, to share the next.
    fetch_waits: int = 0
    refreshes_ahead: int = 0
    config_lookups: int = 0
    helper_runs: int = 0
    #: Refused credentials of a credential helper asked for again (one per renewal).
    credentials_renewed: int = 0
    anonymous_realm_downgrades: int = 0
    #: Tokens taken from the shared cache tier (another process's) instead of a token server.
    shared_hits: int = 0
    #: Calls to the shared cache tier that raised (a store that cannot reach its backend
    #: answers "nothing" without raising; its own ``stats`` count that).
    shared_errors: int = 0

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
