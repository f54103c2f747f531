"""One place that decides what of a secret-bearing value may be shown.

Used by logging, ``repr``s and exception messages, so that a credential,
token or pre-signed URL signature never reaches any of them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping

from yarl import URL

from aociauth._urls import parse_url

__all__ = [
    "SAFE_QUERY_KEYS",
    "SECRET_HEADERS",
    "mask",
    "redact_headers",
    "redact_query",
    "redact_query_values",
    "redact_text",
    "redact_url",
]

SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})

#: Query parameters of registry and token URLs that never carry a secret; every
#: other value is hidden by :func:`redact_query` (go-containerregistry's list).
SAFE_QUERY_KEYS = frozenset({"scope", "service", "mount", "from", "digest", "n", "last"})

# "Authorization: <anything to the end of the line or quote>", in headers and dict reprs.
_HEADER_RE = re.compile(
    r"(?i)(?<![\w-])(authorization|proxy-authorization|cookie|set-cookie|x-registry-auth)"
    r"(['\"]?[ \t]*[:=][ \t]*['\"]?)([^\r\n'\"]+)"
)
# "Bearer xyz", "Basic xyz", but not the "Basic realm=..." of a challenge.
_SCHEME_RE = re.compile(
    r"(?i)\b(bearer|basic)([ \t]+)(?!(?:realm|scope|service|error)[ \t]*=)([^\s\"'<>]+)"
)
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# key=value and key: value pairs. The key starts only where a word starts, so the
# regex does linear work; whether the key says secret is decided in Python.
_KEY_RE = re.compile(r"(?<![\w.\-])([\w.\-]+)(['\"]?[ \t]*[:=][ \t]*)")
_VALUE_RE = re.compile(r"\"[^\"\n]{0,4096}\"|'[^'\n]{0,4096}'|[\"']?[^\s\"'&<>#]+")
# Key names that mean the value is a credential: passwords, tokens, signatures
# of pre-signed URLs (X-Amz-Signature, X-Goog-Signature, Azure SAS sig, OSS
# Signature), their credentials and security tokens, API keys.
_SECRET_KEY_RE = re.compile(
    r"(?i)sig|token|secret|pass|pwd|auth|credential|key|cookie|jwt|hmac|hdnts"
)
# Runs of text a URL can sit in: no whitespace, no double quote or backtick. "<"
# and ">" do not end a run, so that a value hidden already ("<redacted>") does
# not cut a userinfo in two.
_RUN_RE = re.compile(r"[^\s\"`]+")
# What follows "@" in an image reference ("host:5000/app@sha256:..."), not a host.
_DIGEST_RE = re.compile(r"@sha(?:256|384|512):")


def mask(secret: str) -> str:
    """Show that a secret is present without showing any of it."""
    return "<set>" if secret else "<empty>"


def token_repr(kind: str, scope: str, expires_at: float) -> str:
    """The ``repr`` of a bearer token held as ``kind``: what it is for, never the token."""
    return f"{kind}(<redacted>, scope={scope!r}, expires_at={expires_at:.1f})"


def _rebuilt(url: str | URL, query: Callable[[URL], list[tuple[str, str]]]) -> str:
    """``url`` without userinfo and fragment, with the query ``query`` makes of it.

    Never raises: text yarl cannot read (it raises IndexError and UnicodeError
    too) gives ``<unparseable URL>``.
    """
    u = parse_url(url)
    if u is None:
        return "<unparseable URL>"
    try:
        if u.raw_user is not None or u.raw_password is not None:
            u = u.with_user(None)  # drops the password too
        u = u.with_fragment(None)
        pairs = query(u)
        return str(u.with_query(pairs) if pairs else u.with_query(None))
    except Exception:
        return "<unparseable URL>"


def redact_url(url: str | URL) -> str:
    """A URL fit for a message: no userinfo, no query string, no fragment.

    Query strings of blob redirects hold pre-signed signatures, and realm URLs
    may carry userinfo; neither is needed to say which host and path failed.
    """
    return _rebuilt(url, lambda u: [])


def redact_query(url: str | URL) -> str:
    """A URL fit for a message that keeps its query's shape: each value hidden but safe ones.

    Unlike :func:`redact_url`, the reader still sees which parameters a
    pre-signed storage URL carried (``X-Amz-Signature=REDACTED``), and the
    values of :data:`SAFE_QUERY_KEYS`; userinfo and fragment are dropped
    (google/go-containerregistry#1408: a GCS ``access_token`` printed by a
    connection error).
    """
    return _rebuilt(
        url, lambda u: [(k, v if k in SAFE_QUERY_KEYS else "REDACTED") for k, v in u.query.items()]
    )


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Header pairs with the values of credential-bearing headers replaced."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k, "<redacted>" if k.lower() in SECRET_HEADERS else v) for k, v in items]


Span = tuple[int, int]


def _userinfo_spans(text: str) -> Iterator[Span]:
    """The userinfo of every URL (or ``user:pass@host``) in ``text``.

    In each run of text, whatever comes before the last ``@`` is userinfo:
    after ``//`` in a URL of any scheme (yarl need not be able to read it), or
    the whole head when it holds a ``:`` (``robot:pw@vault``,
    ``vault:robot:pw@host``). A head with neither (``alice@example.com``) is
    an address, not a password. Over-hiding a path that holds an ``@`` is the
    price of never guessing.
    """
    for m in _RUN_RE.finditer(text):
        run = m.group(0)
        at = run.rfind("@")
        if at <= 0 or _DIGEST_RE.match(run, at):
            continue
        head = run[:at]
        slashes = head.find("//")
        if slashes >= 0:
            start = slashes + 2
        elif ":" in head:
            start = len(head) - len(head.lstrip("([{'=,;<"))
        else:
            continue
        if start < at:
            yield m.start() + start, m.start() + at


def _is_host_port(text: str, m: re.Match[str]) -> bool:
    """Whether a ``key: value`` match is a URL's ``host:port`` (``//auth.example:443``)."""
    if m.group(2).strip(" \t") != ":":
        return False
    start = m.start()
    return (
        "." in m.group(1)
        or text[max(0, start - 2) : start] == "//"
        or text[start - 1 : start] == "@"
    )


def _pair_spans(text: str) -> Iterator[Span]:
    """The value of every ``key=value`` / ``key: value`` whose key names a credential.

    Only the key and separator of other pairs are passed over, so the search
    goes on inside their values (``https://s3/x?X-Amz-Signature=...``).
    """
    pos = 0
    while (m := _KEY_RE.search(text, pos)) is not None:
        pos = m.end()
        if not _SECRET_KEY_RE.search(m.group(1)) or _is_host_port(text, m):
            continue
        value = _VALUE_RE.match(text, pos)
        if value is None:
            continue
        start, end = value.span()
        v = value.group(0)
        if v[0] in "'\"":
            start += 1
            if len(v) > 1 and v.endswith(v[0]):
                end -= 1
        if start < end:
            yield start, end
        pos = value.end()


def _secret_spans(text: str, secrets: Iterable[str]) -> Iterator[Span]:
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        at = text.find(secret)
        while at >= 0:
            yield at, at + len(secret)
            at = text.find(secret, at + 1)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secrets and anything shaped like a credential from free text.

    For text from anywhere (a custom Config's exception, a server's error),
    each of these is replaced by ``<redacted>``:

    * ``secrets``: each known secret of 4 characters or more;
    * ``Authorization``/``Cookie``-style header values, to the end of the line;
    * the userinfo of every URL-looking run, of any scheme, and of
      ``user:pass@host`` (see :func:`_userinfo_spans`);
    * ``Bearer``/``Basic`` credentials and JWT-shaped strings;
    * the value of every ``key=value`` or ``key: value`` whose key names a
      credential (``password``, ``access_token``, ``X-Amz-Signature``,
      ``sig``, ``api_key``, ...), quoted or not, in a query string or not.

    Every rule reads the original text and the spans they find are merged
    before anything is replaced, so no rule's output can hide a secret from
    another (a signature holding an ``@``, a password holding ``sig:``).
    """
    spans = sorted(
        itertools.chain(
            _secret_spans(text, secrets),
            (m.span(3) for m in _HEADER_RE.finditer(text)),
            _pair_spans(text),
            _userinfo_spans(text),
            (m.span(3) for m in _SCHEME_RE.finditer(text)),
            (m.span() for m in _JWT_RE.finditer(text)),
        )
    )
    out: list[str] = []
    done = 0
    for start, end in spans:
        if end <= done:
            continue
        if start > done:
            out.append(text[done:start])
            out.append("<redacted>")
        elif not out or out[-1] != "<redacted>":
            out.append("<redacted>")
        done = end
    out.append(text[done:])
    return "".join(out)


def redact_query_values(url: str | URL) -> str:
    """A URL fit for a message with every query value hidden and every key kept.

    For URLs reached by a redirect from a registry to another origin: whatever
    signs them (``X-Amz-Signature``, GCS ``access_token``, Azure ``sig``, a
    CDN's own ``token`` or ``hdnts``) is a credential, named or not, so no
    value is shown, not even those of :data:`SAFE_QUERY_KEYS`. Userinfo and
    fragment are dropped. Text yarl cannot read gives ``<unparseable URL>``.
    """
    return _rebuilt(url, lambda u: [(k, "REDACTED") for k in u.query])
