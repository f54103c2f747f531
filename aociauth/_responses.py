"""Changes the middleware makes to aiohttp responses, kept in one place.

aiohttp has no public way to give a response another status, headers or body,
or to hide part of the URL its errors print; these functions do it through the
few attributes aiohttp reads them from (``_headers``, ``_body``, ``content``,
``_request_info``, and the ``_cache`` of its ``@reify`` properties).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import weakref
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import ClientRequest, ClientResponse, hdrs
from aiohttp.base_protocol import BaseProtocol
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from aociauth._capped import collect_capped
from aociauth._redact import redact_query, redact_query_values
from aociauth._urls import crosses_origin, join_url
from aociauth.errors import TokenServerError

if TYPE_CHECKING:
    from aociauth.core import Deny

__all__ = [
    "DENIED_BODY",
    "DENIED_MESSAGE",
    "PRESIGNED_KEYS",
    "denied_body",
    "hide_followed_redirect",
    "hide_presigned",
    "is_presigned",
    "note_redirect",
    "read_capped",
    "redirect_target",
    "rewrite_403",
]

#: The original's message for the rewritten 403 (ociauth's ``ErrDenied`` text).
DENIED_MESSAGE = "unauthorized response with freshly acquired auth token"

DENIED_BODY = json.dumps({"errors": [{"code": "DENIED", "message": DENIED_MESSAGE}]}).encode()


def denied_body(deny: Deny) -> bytes:
    """The rewritten 403's body: the original's, its message followed by the core's reason.

    The ``detail`` (an OCI error's free-form field) holds the same facts as
    values: ``registry``, ``anonymous``, ``credentials_found``, ``username``
    and ``credential_source``; never a secret.
    """
    who = deny.requester
    if not deny.reason or who is None:
        return DENIED_BODY
    detail = {
        "registry": who.registry,
        "anonymous": who.anonymous,
        "credentials_found": who.found,
        "username": who.username,
        "credential_source": who.source,
    }
    error = {"code": "DENIED", "message": f"{DENIED_MESSAGE}; {deny.reason}", "detail": detail}
    return json.dumps({"errors": [error]}).encode()


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
    return bool(url.raw_query_string) and not PRESIGNED_KEYS.isdisjoint(
        k.lower() for k in url.query
    )


def _set_reified(resp: ClientResponse, name: str, value: object) -> None:
    """Set what a response's ``@reify`` property ``name`` answers: aiohttp keeps the
    value in ``_<name>`` and caches it in ``_cache`` once the property is read."""
    setattr(resp, f"_{name}", value)
    cache = getattr(resp, "_cache", None)
    if isinstance(cache, dict):
        cache[name] = value


def replace_headers(resp: ClientResponse, headers: CIMultiDict[str]) -> None:
    """Give a response other headers."""
    _set_reified(resp, "headers", CIMultiDictProxy(headers))


#: A redirect worth hiding, kept (weakly) until the hop that follows it: the response,
#: its target, and whether every query value of the target is to be hidden.
_followed: contextvars.ContextVar[tuple[weakref.ref[ClientResponse], URL, bool] | None] = (
    contextvars.ContextVar("aociauth_followed", default=None)
)


def note_redirect(req: ClientRequest, resp: ClientResponse) -> None:
    """Read a redirect's target, and remember it when the hop that follows must be hidden.

    Raises :class:`aiohttp.InvalidUrlRedirectClientError` for a ``Location`` yarl
    cannot read (:func:`redirect_target`). A target on another origin is hidden
    whole (every query value): a CDN's signature can have any name. A same-origin
    target is hidden when it carries a known pre-signed key.
    """
    if not 300 <= resp.status < 400:
        return
    try:
        target = redirect_target(req.url, resp.status, resp.headers.get(hdrs.LOCATION))
    except aiohttp.ClientError:
        resp.release()
        raise
    if target is None or not target.raw_query_string:
        return
    every_value = crosses_origin(req.url, target)
    if every_value or is_presigned(target):
        _followed.set((weakref.ref(resp), target, every_value))


def hide_followed_redirect(req: ClientRequest) -> bool:
    """Once aiohttp follows a noted redirect, hide the target's query in the redirect's
    Location too: the redirect stays in resp.history, and the repr of
    ClientResponseError prints the history's headers. True when ``req`` is a hop to
    another origin, whose own response is then to be hidden whole."""
    pending = _followed.get()
    if pending is None:
        return False
    _followed.set(None)
    ref, target, every_value = pending
    redirect = ref()
    if redirect is None or req.url != target:
        return False
    headers = CIMultiDict(redirect.headers)
    hide = redact_query_values if every_value else redact_query
    headers[hdrs.LOCATION] = hide(target)
    replace_headers(redirect, headers)
    return every_value


def hide_presigned(resp: ClientResponse, *, every_value: bool = False) -> None:
    """Let no message about this response print the signature of its pre-signed URL.

    aiohttp's ClientResponseError (``raise_for_status``) prints
    ``request_info.real_url``; ``resp.url`` itself stays what it was. With
    ``every_value``, every query value is hidden, not only the known signatures.
    """
    hide = redact_query_values if every_value else redact_query
    info = resp.request_info
    hidden = info._replace(url=URL(hide(info.url)), real_url=URL(hide(info.real_url)))
    _set_reified(resp, "request_info", hidden)


#: The most of a registry's body drained to keep its connection in the pool.
_MAX_DRAIN = 64 * 1024


class _TooBig(Exception):
    pass


async def read_capped(resp: ClientResponse, cap: int, where: str, registry: str) -> bytes:
    """The body, or an error once it passes ``cap`` bytes (nothing past the cap is read)."""

    def too_big() -> TokenServerError:
        return TokenServerError(
            f"{where} sent a body larger than {cap} bytes",
            registry=registry,
            step="token",
            status=resp.status,
        )

    chunks = resp.content.iter_chunked(64 * 1024)
    return await collect_capped(chunks, cap, resp.content_length, too_big)


async def rewrite_403(resp: ClientResponse, body: bytes = DENIED_BODY) -> ClientResponse:
    """The original's rule: a 401 right after a token the server just gave us means 403 DENIED.

    The registry's own (small) body is drained so the connection goes back to
    the pool; the response is then given the DENIED ``body`` (see
    :func:`denied_body`) through every way of reading it: ``read()``,
    ``text()``, ``json()`` and ``content``.
    """
    drained = 0
    try:
        async for chunk in resp.content.iter_chunked(64 * 1024):
            drained += len(chunk)
            if drained > _MAX_DRAIN:
                raise _TooBig
    except (_TooBig, aiohttp.ClientError, asyncio.TimeoutError):
        resp.close()
        # close() marks the response released, after which read() refuses even a
        # body it holds; the content is replaced below, so reading it is sound.
        resp._released = False
    headers = CIMultiDict(resp.headers)
    headers[hdrs.CONTENT_TYPE] = "application/json"
    headers[hdrs.CONTENT_LENGTH] = str(len(body))
    headers.popall(hdrs.WWW_AUTHENTICATE, None)
    resp.status = 403
    resp.reason = "Forbidden"
    replace_headers(resp, headers)
    loop = asyncio.get_running_loop()
    content = aiohttp.StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    content.feed_data(body)
    content.feed_eof()
    resp.content = content
    resp._body = body
    return resp


def redirect_target(base: URL, status: int, location: str | None) -> URL | None:
    """Where a response to a request for ``base`` redirects, or None if it does not.

    A 3xx with a ``Location`` yarl cannot read raises
    :class:`aiohttp.InvalidUrlRedirectClientError`, the error aiohttp itself
    raises for most such values. aiohttp 3.14 lets ``IndexError`` out for
    others (``http://[]@``); a middleware that calls this on every response
    turns those into the same ClientError before aiohttp sees them.
    """
    if not 300 <= status < 400 or location is None:
        return None
    target = join_url(base, location)
    if target is None:
        # The Location itself is not shown: it can be anything, a signature included.
        raise aiohttp.InvalidUrlRedirectClientError(
            "<unreadable Location>",
            f"{status} from {base.host} redirects to a location that does not look like a URL",
        )
    if target.raw_user is not None or target.raw_password is not None:
        # aiohttp would send the URL's user info as Basic credentials to the target (and
        # fails outright on one it cannot encode): no registry redirects so; refused.
        raise aiohttp.InvalidUrlRedirectClientError(
            "<Location with user info>",
            f"{status} from {base.host} redirects to a location that carries user info",
        )
    return target
