"""One place that decides what of a secret-bearing value may be shown.

Used by logging, ``repr``s and exception messages, so that a credential,
token or pre-signed URL signature never reaches any of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from yarl import URL

__all__ = [
    "SAFE_QUERY_KEYS",
    "SECRET_HEADERS",
    "mask",
    "redact_headers",
    "redact_query",
    "redact_text",
    "redact_url",
]

SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})

#: Query parameters of registry and token URLs that never carry a secret; every
#: other value is hidden by :func:`redact_query` (go-containerregistry's list).
SAFE_QUERY_KEYS = frozenset({"scope", "service", "mount", "from", "digest", "n", "last"})

# "Bearer xyz", "Basic xyz", JWT-looking runs and key=value pairs whose key says secret.
_SCHEME_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*")
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_KV_RE = re.compile(
    r"(?i)\b(password|passwd|secret|token|access_token|refresh_token|identitytoken"
    r"|registrytoken|auth|x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig)"
    r"(\"?\s*[:=]\s*\"?)([^\s\"&,;]+)"
)


def mask(secret: str) -> str:
    """Show that a secret is present without showing any of it."""
    return "<set>" if secret else "<empty>"


def redact_url(url: str | URL) -> str:
    """A URL fit for a message: no userinfo, no query string, no fragment.

    Query strings of blob redirects hold pre-signed signatures, and realm URLs
    may carry userinfo; neither is needed to say which host and path failed.
    """
    try:
        u = url if isinstance(url, URL) else URL(str(url))
        u = u.with_user(None).with_password(None).with_query(None).with_fragment(None)
        return str(u)
    except (ValueError, TypeError):
        return "<unparseable URL>"


def redact_query(url: str | URL) -> str:
    """A URL fit for a message that keeps its query's shape: each value hidden but safe ones.

    Unlike :func:`redact_url`, the reader still sees which parameters a
    pre-signed storage URL carried (``X-Amz-Signature=REDACTED``), and the
    values of :data:`SAFE_QUERY_KEYS`; userinfo and fragment are dropped
    (google/go-containerregistry#1408: a GCS ``access_token`` printed by a
    connection error).
    """
    try:
        u = url if isinstance(url, URL) else URL(str(url))
        query = [(k, v if k in SAFE_QUERY_KEYS else "REDACTED") for k, v in u.query.items()]
        u = u.with_user(None).with_password(None).with_fragment(None)
        return str(u.with_query(query) if query else u.with_query(None))
    except (ValueError, TypeError):
        return "<unparseable URL>"


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Header pairs with the values of credential-bearing headers replaced."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k, "<redacted>" if k.lower() in SECRET_HEADERS else v) for k, v in items]


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secrets and anything shaped like a credential from free text."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "<redacted>")
    text = _SCHEME_RE.sub(lambda m: f"{m.group(1)} <redacted>", text)
    text = _JWT_RE.sub("<redacted-jwt>", text)
    return _KV_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", text)
