"""Reading what a server sends as a URL or a delay, whatever it sends.

A realm, a redirect's ``Location`` and a ``Retry-After`` come from the
registry, and yarl is not written for hostile text: besides ValueError it
raises IndexError (``http://[]@``), UnicodeError (``http://a\\udcff/`` when
building, ``http://xn--zz/`` only when ``.host`` is first read) and TypeError.
:func:`parse_url` and :func:`join_url` turn every one of them into None, and
read the lazily computed parts of the URL up front, so a URL they return does
not raise later when a message or a connection looks at it.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re

from yarl import URL

__all__ = [
    "MAX_RETRY_AFTER_LENGTH",
    "MAX_URL_LENGTH",
    "crosses_origin",
    "join_url",
    "parse_retry_after",
    "parse_url",
]

#: Longest URL text read, in characters: twice aiohttp's default header field
#: limit (8190 bytes), as for ``WWW-Authenticate`` lines.
MAX_URL_LENGTH = 16 * 1024

#: Longest ``Retry-After`` value read. An HTTP-date is 29 characters; the
#: obsolete forms RFC 9110 §5.6.7 still asks recipients to accept are shorter
#: than 40.
MAX_RETRY_AFTER_LENGTH = 64

# RFC 9110 §10.2.3: delay-seconds = 1*DIGIT, and DIGIT is ASCII (RFC 5234 B.1);
# str.isdigit() also says yes to "²" and "٣".
_DELAY_SECONDS = re.compile(r"[0-9]+")


def _checked(url: URL) -> URL:
    # Every property below is computed on first use and may raise for text that
    # constructed without complaint (an invalid xn-- label raises UnicodeError
    # only in .host).
    _ = (url.scheme, url.raw_host, url.host, url.port, url.explicit_port)
    _ = (url.raw_user, url.raw_password, url.raw_path, url.raw_query_string)
    str(url)
    return url


def parse_url(text: str | URL) -> URL | None:
    """``text`` as a URL, or None when yarl cannot read it (or it is too long).

    Never raises. A relative reference parses too; check ``is_absolute()``.
    """
    if isinstance(text, URL):
        text = str(text)
    if not isinstance(text, str) or len(text) > MAX_URL_LENGTH:
        return None
    try:
        return _checked(URL(text))
    except Exception:
        # Not only ValueError: yarl and idna raise IndexError, UnicodeError and
        # TypeError for bad input, and the answer to all of them is "not a URL".
        return None


def join_url(base: URL, reference: str | URL) -> URL | None:
    """``reference`` resolved against ``base`` (RFC 3986 §5), as a redirect's
    ``Location`` or a relative realm is; None when either cannot be read.

    Never raises. An absolute ``reference`` is returned as parsed.
    """
    ref = parse_url(reference)
    if ref is None:
        return None
    try:
        return _checked(base.join(ref))
    except Exception:
        return None


def crosses_origin(source: URL, target: URL) -> bool:
    """Whether ``target`` is on another origin (scheme, host, port) than ``source``.

    Never raises; a URL without scheme or host is another origin than any.
    """
    try:
        a = (source.scheme.lower(), source.host, source.port)
        b = (target.scheme.lower(), target.host, target.port)
    except Exception:
        return True
    # origin() keeps an explicit default port, so it calls :443 another origin.
    return not (a[0] and a[1]) or a != b


def parse_retry_after(value: str | None, cap: float, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110 §10.2.3), within [0, cap].

    ``value`` is delay-seconds (ASCII digits only) or an HTTP-date, which is
    measured from ``now`` (Unix time, the caller's clock: this function reads
    none). Returns None for anything else, or for a value longer than
    :data:`MAX_RETRY_AFTER_LENGTH`: an unreadable hint is no hint. A date
    without a time zone (``-0000``) is read as UTC. A ``cap`` below 0 or NaN
    counts as 0, an infinite one as no cap: a setting never makes this raise.
    """
    if not cap >= 0:  # also NaN
        cap = 0.0
    if not isinstance(value, str) or len(value) > MAX_RETRY_AFTER_LENGTH:
        return None
    value = value.strip(" \t")
    if not value:
        return None
    if _DELAY_SECONDS.fullmatch(value):
        # At most 64 digits: int() is exact and cheap, and comparing before
        # converting keeps 10**60 from becoming a float at all.
        delay = int(value)
        return float(delay) if delay < cap else float(cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, min(seconds - now, float(cap)))
