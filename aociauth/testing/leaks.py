"""Canary secrets, and the checks that none turned up where it must not.

A test about leaks plants secrets that cannot occur by chance (the canaries
below: long and distinctive), runs its flow, then looks for them: in what a
server received (:func:`assert_no_credentials`), in an exception and all it
chains to (:func:`exception_texts` with :func:`assert_clean`), in a log.
Finding one is never a coincidence, so a failure always means a leak.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aociauth.testing._http import Exchange

if TYPE_CHECKING:
    from aociauth.testing.registry import RecordedRequest

__all__ = [
    "ACCESS_TOKEN",
    "CANARIES",
    "HELPER_SECRET",
    "PASSWORD",
    "REFRESH_TOKEN",
    "SIGNATURE",
    "assert_clean",
    "assert_no_credentials",
    "exception_texts",
]

PASSWORD = "canary-PASSWORD-7f3a91"  # noqa: S105 (a canary: planted to be looked for)
"""A password to plant in a config."""
REFRESH_TOKEN = "canary-REFRESH-c0ffee42"  # noqa: S105
"""A refresh token (``identitytoken``) to plant."""
ACCESS_TOKEN = "canary-ACCESS-5eed5eed"  # noqa: S105
"""An access token (``registrytoken``) to plant, or for a token server to issue."""
HELPER_SECRET = "canary-HELPER-d15ea5e"  # noqa: S105
"""A secret for a credential helper to answer."""
SIGNATURE = "canary0signature0deadbeef"
"""A pre-signed URL's signature (``X-Amz-Signature=...``) to plant."""
CANARIES = (PASSWORD, REFRESH_TOKEN, ACCESS_TOKEN, HELPER_SECRET, SIGNATURE)
"""Every canary above."""

_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")
_CREDENTIAL_FIELDS = ("password=", "refresh_token=", "access_token=")


def _request_text(request: Exchange | RecordedRequest) -> tuple[str, set[str]]:
    if isinstance(request, Exchange):
        return request.text(), {k.lower() for k in request.headers}
    heads = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
    query = "&".join(f"{k}={v}" for k, v in request.query.items())
    text = f"{request.path}?{query}\n{heads}\n" + request.body.decode("latin-1")
    return text, {k.lower() for k in request.headers}


def assert_no_credentials(
    requests: Iterable[Exchange | RecordedRequest], *, where: str = "server"
) -> None:
    """Nothing credential-like in any of ``requests``; AssertionError naming the first found.

    No ``Authorization``, ``Proxy-Authorization`` or ``Cookie`` header, none of
    the :data:`CANARIES` anywhere, no ``password=``, ``refresh_token=`` or
    ``access_token=`` field. ``requests`` are a :class:`ScriptedServer`'s
    (:class:`~aociauth.testing._http.Exchange`) or a
    :class:`~aociauth.testing.RecordingServer`'s; ``where`` names the server
    in the message, which never quotes the secret.
    """
    for request in requests:
        text, names = _request_text(request)
        for header in _CREDENTIAL_HEADERS:
            if header in names:
                raise AssertionError(
                    f"{where} received {header} on {request.method} {request.path}"
                )
        if any(canary in text for canary in CANARIES):
            raise AssertionError(f"{where} received a secret on {request.method} {request.path}")
        for field_name in _CREDENTIAL_FIELDS:
            if field_name in text:
                raise AssertionError(f"{where} received {field_name} on {request.path}")


def exception_texts(exc: BaseException) -> str:
    """str, repr and the formatted traceback of ``exc`` and everything it chains to.

    Also the repr of the attributes aiohttp's errors carry (``request_info``,
    ``history``, ``headers``, ``message``, ``url``): everything a caller's log
    line or error report could print.
    """
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        parts += [str(cur), repr(cur)]
        for attr in ("request_info", "history", "headers", "message", "url"):
            value = getattr(cur, attr, None)
            if value is not None:
                parts.append(repr(value))
        cur = cur.__cause__ or cur.__context__
    parts.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return "\n".join(parts)


def assert_clean(text: str, *secrets: str) -> None:
    """None of the :data:`CANARIES`, and none of ``secrets``, is in ``text``.

    The AssertionError shows only a secret's first characters.
    """
    for secret in (*CANARIES, *secrets):
        if secret and secret in text:
            raise AssertionError(f"a secret ({secret[:8]}...) leaked")
