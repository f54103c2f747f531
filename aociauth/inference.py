"""Scope inference: the scope a registry API request needs, from its method and path.

The Go original only knows a request's required scope when the caller says
(``RequestInfo``). A registry built on distribution decides what a request
needs from its route and method alone, so the middleware can work it out the
same way and fetch a suitable token before the registry has to ask.

The routes are distribution's (``registry/api/v2/routes.go``, also the OCI
distribution specification's endpoints), the access rules its
``appendAccessRecords``:

========================================  =====================================
route                                     scope
========================================  =====================================
``/v2/``                                  empty
``/v2/_catalog``                          ``registry:catalog:*``
``/v2/NAME/manifests/REFERENCE``          by method, on ``repository:NAME``
``/v2/NAME/blobs/DIGEST``                 by method
``/v2/NAME/blobs/uploads/``               by method, plus a mount's source
``/v2/NAME/blobs/uploads/UUID``           by method
``/v2/NAME/tags/list``                    by method
``/v2/NAME/referrers/DIGEST``             by method
========================================  =====================================

By method: GET and HEAD need ``pull``; POST, PUT and PATCH need ``pull`` and
``push``; DELETE needs ``delete``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum
from functools import lru_cache

from ._reference import DIGEST, NAME_MAX, is_name_component, is_repository_name, is_tag
from .scope import (
    ACTION_PULL,
    ACTION_PUSH,
    CATALOG_SCOPE,
    TYPE_REPOSITORY,
    ResourceScope,
    Scope,
    new_scope,
)

__all__ = ["infer_scope"]

# The grammar (aociauth._reference): a route matches a digest by its grammar
# alone, as distribution's router does before it asks for authorization.
_DIGEST = re.compile(DIGEST)
# The upload session id in the blob-upload-chunk route.
_UPLOAD_ID = re.compile(r"[a-zA-Z0-9_.=-]+")

_READ_METHODS = frozenset({"GET", "HEAD"})
_ACTIONS: Mapping[str, tuple[str, ...]] = {
    "GET": (ACTION_PULL,),
    "HEAD": (ACTION_PULL,),
    "POST": (ACTION_PULL, ACTION_PUSH),
    "PUT": (ACTION_PULL, ACTION_PUSH),
    "PATCH": (ACTION_PULL, ACTION_PUSH),
    "DELETE": ("delete",),
}

_EMPTY = Scope()
_CATALOG = new_scope(CATALOG_SCOPE)


class _Route(Enum):
    BASE = "base"
    CATALOG = "catalog"
    MANIFEST = "manifest"
    BLOB = "blob"
    UPLOAD_START = "blob-upload"
    UPLOAD_CHUNK = "blob-upload-chunk"
    TAGS = "tags"
    REFERRERS = "referrers"


def infer_scope(method: str, path: str, query: Mapping[str, str] | None = None) -> Scope | None:
    """Return the scope a registry needs for ``method`` on ``path``, or None.

    ``path`` is the URL's path, already percent-decoded (as aiohttp's
    ``request.url.path`` is), without the query; the host and port play no
    part. ``query`` holds the query parameters; only ``from`` is read, on a
    POST that starts an upload: a blob mount
    (``POST /v2/NAME/blobs/uploads/?mount=DIGEST&from=OTHER``) also needs
    ``repository:OTHER:pull``. Distribution asks for that whenever ``from``
    is given, with or without ``mount``; an invalid name there is ignored.

    None means the request is not one of the registry API routes, or its
    method has no access rule there, and the caller should not guess. A
    registry served under a path prefix (``/prefix/v2/...``) is recognised:
    the first ``v2`` segment after which the rest is a route wins. A trailing
    slash is accepted on every route, as distribution accepts it (by
    redirect). The result's string is canonical.
    """
    method = method.upper()
    if method not in _ACTIONS:
        return None
    if len(path) <= _CACHED_PATH_MAX:
        found = _cached_route_scope(method, path)
    else:
        found = _route_scope(method, path)
    if found is None:
        return None
    route, scope = found
    if route is _Route.UPLOAD_START and method == "POST" and query:
        source = query.get("from")
        if source and is_repository_name(source):
            scope = scope | new_scope(ResourceScope(TYPE_REPOSITORY, source, ACTION_PULL))
    return scope


def _route_scope(method: str, path: str) -> tuple[_Route, Scope] | None:
    if not path.startswith("/"):
        return None
    segments = path.split("/")
    found = _repository_route(segments)
    if found is not None:
        route, repository = found
        actions = _ACTIONS[method]
        return route, new_scope(
            *(ResourceScope(TYPE_REPOSITORY, repository, action) for action in actions)
        )
    # The routes without a name end in their "v2", so any repository route
    # found above starts at an earlier "v2" and rightly wins.
    if method not in _READ_METHODS:
        return None
    tail = segments[-3:]
    if tail[-1:] == ["v2"] or tail[-2:] == ["v2", ""]:
        return _Route.BASE, _EMPTY
    if tail[-2:] == ["v2", "_catalog"] or tail == ["v2", "_catalog", ""]:
        return _Route.CATALOG, _CATALOG
    return None


# Inference runs on every request, and a puller cycles through as many paths
# as it has repositories; the function is pure, so remembering recent answers
# is safe. 16,384 entries (a few MiB at most) keep a 10,000-repository rotation
# in the memo (1,024 cost 7 us a request there). Long paths are left out.
_cached_route_scope = lru_cache(maxsize=16384)(_route_scope)
_CACHED_PATH_MAX = 512


def _repository_route(segments: list[str]) -> tuple[_Route, str] | None:
    """Find the route and repository name of ``[..., "v2", NAME..., route...]``.

    The route is decided by the last segments alone. Of the "v2" segments
    that could start the name, the first one after which the name is valid
    wins, as it would for a registry mounted under that prefix.
    """
    end = len(segments)
    if segments[-1] == "":
        end -= 1  # one trailing slash, which distribution redirects away
    found = _split_route(segments, end)
    if found is None:
        return None
    route, name_end = found
    # Walk back over the components that can be part of a valid name; the
    # name length limit keeps this short whatever the path's length.
    start, length = name_end, -1
    while start > 1 and is_name_component(segments[start - 1]):
        length += len(segments[start - 1]) + 1
        if length > NAME_MAX:
            break
        start -= 1
    for i in range(max(start - 1, 1), name_end - 1):
        if segments[i] == "v2":
            return route, "/".join(segments[i + 1 : name_end])
    return None


def _split_route(segments: list[str], end: int) -> tuple[_Route, int] | None:
    """Return the route ``segments[:end]`` ends with and the index where the name ends.

    The routes differ in their last two or three segments, so at most one
    applies to any path.
    """
    if end < 3:
        return None
    last, kind = segments[end - 1], segments[end - 2]
    if kind == "manifests" and (is_tag(last) or _DIGEST.fullmatch(last)):
        return _Route.MANIFEST, end - 2
    if kind == "blobs":
        if last == "uploads":
            return _Route.UPLOAD_START, end - 2
        if _DIGEST.fullmatch(last):
            return _Route.BLOB, end - 2
        return None
    if kind == "uploads" and end >= 4 and segments[end - 3] == "blobs":
        return (_Route.UPLOAD_CHUNK, end - 3) if _UPLOAD_ID.fullmatch(last) else None
    if kind == "tags" and last == "list":
        return _Route.TAGS, end - 2
    if kind == "referrers" and _DIGEST.fullmatch(last):
        return _Route.REFERRERS, end - 2
    return None
