"""Per-request scope information, carried by context variables.

The Go package hangs these values on a ``context.Context``; here they live in
:mod:`contextvars`, which asyncio copies into every task it creates. A value
set with :func:`with_scope` or :func:`with_request_info` is therefore seen by
the requests made inside the ``with`` block, including those made by tasks
started there (``asyncio.gather``, ``asyncio.create_task``), and by nothing
else: concurrent tasks each see their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .scope import EMPTY_SCOPE, Scope

__all__ = [
    "RequestInfo",
    "request_info_from_context",
    "scope_from_context",
    "scopes_from_context",
    "with_request_info",
    "with_scope",
]

_EMPTY = EMPTY_SCOPE

_scope_var: ContextVar[Scope] = ContextVar("aociauth.scope")
_request_info_var: ContextVar[RequestInfo] = ContextVar("aociauth.request_info")


@dataclass(frozen=True)
class RequestInfo:
    """What the request being made needs (Go: ``RequestInfo``).

    ``required_scope`` is the scope a token must have for the request: the
    middleware reuses any cached token whose scope contains it. When set, it
    takes the place of the scope the middleware would infer from the path.
    """

    required_scope: Scope = _EMPTY

    def __post_init__(self) -> None:
        if not isinstance(self.required_scope, Scope):
            raise TypeError(
                f"required_scope must be a Scope, not {type(self.required_scope).__name__}"
            )


@contextmanager
def with_scope(scope: Scope) -> Iterator[Scope]:
    """Set the scope wanted for tokens acquired inside the ``with`` block.

    When the middleware acquires a token, it asks for this scope as well as
    the one the request requires, so one token can serve the requests that
    follow (Go: ``ContextWithScope``). The previous value is restored on exit.
    """
    if not isinstance(scope, Scope):
        raise TypeError(f"with_scope needs a Scope, not {type(scope).__name__}")
    token = _scope_var.set(scope)
    try:
        yield scope
    finally:
        _scope_var.reset(token)


def scope_from_context() -> Scope:
    """Return the scope set by the innermost :func:`with_scope`, or the empty scope."""
    return _scope_var.get(_EMPTY)


@contextmanager
def with_request_info(info: RequestInfo) -> Iterator[RequestInfo]:
    """Describe the request(s) made inside the ``with`` block (Go: ``ContextWithRequestInfo``).

    The previous value is restored on exit.
    """
    if not isinstance(info, RequestInfo):
        raise TypeError(f"with_request_info needs a RequestInfo, not {type(info).__name__}")
    token = _request_info_var.set(info)
    try:
        yield info
    finally:
        _request_info_var.reset(token)


def request_info_from_context() -> RequestInfo:
    """Return the :class:`RequestInfo` set by :func:`with_request_info`, or an empty one."""
    return _request_info_var.get(_NO_INFO)


def scopes_from_context() -> tuple[Scope | None, Scope]:
    """For the middleware, once per request: the :class:`RequestInfo`'s required scope
    (None when no :func:`with_request_info` block is active) and the
    :func:`with_scope` scope."""
    info = _request_info_var.get(None)
    return (None if info is None else info.required_scope), _scope_var.get(_EMPTY)


def request_info_is_set() -> bool:
    """Report whether a :func:`with_request_info` block is active.

    For the middleware: a caller's :class:`RequestInfo`, even one with an
    empty scope, wins over the scope inferred from the request path, so the
    middleware must tell "set to empty" from "not set".
    """
    return _request_info_var.get(None) is not None


_NO_INFO = RequestInfo()
