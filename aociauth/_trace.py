"""OpenTelemetry spans for what costs a round trip, when opentelemetry-api is installed.

Four spans, all ``INTERNAL``, named under ``aociauth.``:

* ``aociauth.credential_lookup``: one per (origin, namespace) the adapter asks
  its config about (the answer is remembered, so later requests make none);
* ``aociauth.helper_run``: one per ``docker-credential-NAME get`` process;
* ``aociauth.token_fetch``: one per token fetch (concurrent requests joining a
  fetch make none), with the realm, the scope's size and the outcome;
* ``aociauth.token_request``: its child, one per HTTP request to the token
  server (each retry is one more).

A request answered from the token cache makes no span: no hook is on that
path. Without opentelemetry-api (the ``otel`` extra) the import below fails
once, and every hook returns a shared do-nothing object; so it does while the
application has set up no tracer provider (an SDK's).

Attributes never hold a password, token, refresh token or Authorization
value, nor an error's message (a helper's standard error may quote its
input): an error is its class name and step. Repository names (the scope's
strings) and usernames are left out unless the environment variable
``AOCIAUTH_TRACE_NAMES`` is ``1`` when the span starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, TypeAlias

from aociauth._entry import ConfigEntry
from aociauth.core.rules import REFUSALS
from aociauth.errors import AuthRequestError, HelperError, OCIAuthError
from aociauth.scope import Scope
from aociauth.tokens import AccessToken

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from aociauth.config import Resolution
    from aociauth.core import FetchJob, TokenCall, TokenReply

try:
    from opentelemetry import trace as otel
except ImportError:  # the otel extra is not installed: every hook does nothing
    otel = None  # type: ignore[assignment]

__all__ = [
    "NAMES_ENV",
    "Recorder",
    "config_answered",
    "credential_lookup",
    "helper_run",
    "token_fetch",
    "token_request",
]

#: The environment variable that lets spans carry scope strings and usernames.
NAMES_ENV = "AOCIAUTH_TRACE_NAMES"

#: What an attribute may hold (a subset of OpenTelemetry's ``AttributeValue``).
Value: TypeAlias = str | bool | int | float | tuple[str, ...]


def _off() -> bool:
    """Whether there is nothing to record: no opentelemetry-api, or no tracer provider
    set up (the API's proxy stands in until one is), so that a hook costs next to nothing."""
    return otel is None or isinstance(otel.get_tracer_provider(), otel.ProxyTracerProvider)


def _names_wanted() -> bool:
    return os.environ.get(NAMES_ENV, "").strip().lower() in ("1", "true", "yes")


class Recorder:
    """What a hook writes to its span; writes nothing when there is no span to record."""

    __slots__ = ("_span",)

    def __init__(self, span: Span | None) -> None:
        self._span = span if span is not None and span.is_recording() else None

    def set(self, attributes: Mapping[str, Value]) -> None:
        """Add ``attributes`` to the span."""
        if self._span is not None:
            self._span.set_attributes(attributes)

    def failed(self, exc: BaseException, outcome: str = "error") -> None:
        """Mark the span as failed by ``exc``: its class and step, never its message."""
        if self._span is None or otel is None:
            return
        attrs: dict[str, Value] = {"aociauth.outcome": outcome, "error.type": type(exc).__name__}
        if isinstance(exc, OCIAuthError) and exc.step:
            attrs["aociauth.error.step"] = exc.step
        status = getattr(exc, "status", None) if isinstance(exc, AuthRequestError) else None
        if isinstance(status, int):
            attrs["http.response.status_code"] = status
        code = exc.exit_code if isinstance(exc, HelperError) else None
        if code is not None:
            attrs["process.exit.code"] = code
        self._span.set_attributes(attrs)
        self._span.set_status(otel.Status(otel.StatusCode.ERROR, type(exc).__name__))

    # -- what the hooks learn ----------------------------------------------------

    def found(self, entry: ConfigEntry) -> None:
        """A credential lookup ended with ``entry`` (its kind, never its secret)."""
        if self._span is None:
            return
        attrs: dict[str, Value] = {
            "aociauth.outcome": "ok",
            "aociauth.credentials.kind": _credential_kind(entry),
        }
        if entry.username and _names_wanted():
            attrs["aociauth.username"] = entry.username
        self._span.set_attributes(attrs)

    def replied(self, reply: TokenReply) -> None:
        """A token request ended with ``reply``."""
        if self._span is None:
            return
        if reply.error is not None:
            self.failed(reply.error)
            return
        if reply.status == 200:
            outcome = "ok"
        else:
            # A refusal ends the fetch; another status (429, 5xx) may be retried.
            outcome = "refused" if reply.status in REFUSALS else "error"
        attrs: dict[str, Value] = {"aociauth.outcome": outcome}
        if reply.status is not None:
            attrs["http.response.status_code"] = reply.status
            if reply.status != 200:
                # OTel's HTTP conventions: the status code is the error type.
                attrs["error.type"] = str(reply.status)
        self._span.set_attributes(attrs)


class _FetchRecorder(Recorder):
    """A token fetch's span, and the tally its token requests add to."""

    __slots__ = ("credentials_sent", "grant", "requests", "retries")

    def __init__(self, span: Span | None) -> None:
        super().__init__(span)
        self.requests = 0
        self.retries = 0
        self.grant = ""
        self.credentials_sent = False

    def ended(self, result: AccessToken | OCIAuthError) -> None:
        """The fetch ended with ``result``: the tally and the outcome go on the span."""
        if self._span is None:
            return
        attrs: dict[str, Value] = {
            "aociauth.token_requests": self.requests,
            "aociauth.token_retries": self.retries,
            "aociauth.credentials.sent": self.credentials_sent,
        }
        if self.grant:
            attrs["aociauth.grant"] = self.grant
        self._span.set_attributes(attrs)
        if isinstance(result, AccessToken):
            granted = _size(result.scope)
            self.set({"aociauth.outcome": "ok", "aociauth.scope.granted_items": granted})
        else:
            status = getattr(result, "status", None)
            self.failed(result, "refused" if status in REFUSALS else "error")


_NOTHING = _FetchRecorder(None)
_fetch: ContextVar[_FetchRecorder | None] = ContextVar("aociauth_trace_fetch", default=None)


class _NoSpan(AbstractContextManager[_FetchRecorder]):
    """The hooks' context manager when there is nothing to record: no span, no cost."""

    def __enter__(self) -> _FetchRecorder:
        return _NOTHING

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


@contextmanager
def _span(name: str, attrs: Mapping[str, Value], recorder: type[Recorder]) -> Iterator[Recorder]:
    assert otel is not None
    tracer = otel.get_tracer("aociauth", _version())
    # The status and the error's class are set below, without its message.
    with tracer.start_as_current_span(
        name, attributes=attrs, record_exception=False, set_status_on_exception=False
    ) as span:
        rec = recorder(span)
        try:
            yield rec
        except Exception as exc:
            rec.failed(exc)
            raise
        except BaseException as exc:
            # Cancelled (or interrupted): not a failure of what the span measures.
            rec.set({"aociauth.outcome": "cancelled", "error.type": type(exc).__name__})
            raise


def _version() -> str:
    from aociauth import __version__

    return __version__


# -- the hooks -------------------------------------------------------------------


def credential_lookup(host: str, downgraded: bool, source: str) -> AbstractContextManager[Recorder]:
    """The span of one credential lookup for ``host``.

    ``source`` is where the credentials will come from: ``file`` for a
    :class:`~aociauth.ConfigFile` (until :func:`config_answered` says which
    part of the files answered), ``custom`` for another
    :class:`~aociauth.Config`, ``none`` for none; a downgraded lookup asks none.
    """
    if _off():
        return _NO_SPAN
    if downgraded:
        source = "none"
    attrs: dict[str, Value] = {
        "aociauth.registry": host,
        "aociauth.credentials.source": source,
        "aociauth.downgraded": downgraded,
    }
    return _span("aociauth.credential_lookup", attrs, Recorder)


def config_answered(res: Resolution) -> None:
    """Say on the current credential lookup's span where a ConfigFile's answer came from.

    Called only inside :func:`credential_lookup`'s span, whose span is the current one.
    """
    if _off():
        return
    span = otel.get_current_span()
    if not span.is_recording():
        return
    source = {"auths": "file", "none": "none"}.get(res.kind, "helper")
    attrs: dict[str, Value] = {
        "aociauth.credentials.source": source,
        "aociauth.helper.runs": len(res.helpers_asked),
    }
    if res.helper is not None:
        attrs["aociauth.helper.name"] = res.helper
    span.set_attributes(attrs)


def helper_run(name: str, valid: bool, host: str) -> AbstractContextManager[Recorder]:
    """The span of one ``docker-credential-NAME get`` run for ``host``.

    ``name`` comes from a configuration file; one that is not a valid helper
    name (``valid`` False, and never run) is not recorded.
    """
    if _off():
        return _NO_SPAN
    attrs: dict[str, Value] = {
        "aociauth.helper.name": name if valid else "(invalid)",
        "aociauth.registry": host,
    }
    return _span("aociauth.helper_run", attrs, Recorder)


def token_fetch(job: FetchJob) -> AbstractContextManager[_FetchRecorder]:
    """The span of one token fetch; its token requests count themselves into it."""
    if _off():
        return _NO_SPAN
    return _fetch_span(job)


@contextmanager
def _fetch_span(job: FetchJob) -> Iterator[_FetchRecorder]:
    attrs: dict[str, Value] = {
        "aociauth.registry": job.origin.host,
        "aociauth.scope.items": _size(job.wanted),
        "aociauth.scope.required_items": _size(job.required),
    }
    if _names_wanted():
        attrs["aociauth.scope.names"] = _names(job.wanted)
    with _span("aociauth.token_fetch", attrs, _FetchRecorder) as rec:
        assert isinstance(rec, _FetchRecorder)
        reset = _fetch.set(rec)
        try:
            yield rec
        finally:
            _fetch.reset(reset)


def token_request(call: TokenCall, attempt: int) -> AbstractContextManager[Recorder]:
    """The span of attempt number ``attempt`` (from 1) at ``call``."""
    if _off():
        return _NO_SPAN
    fetch = _fetch.get()
    sends = call.kind != "get_anonymous"
    realm: dict[str, Value] = {"server.address": call.url.host or ""}
    if call.url.port is not None:
        realm["server.port"] = call.url.port
    if fetch is not None:
        fetch.requests += 1
        fetch.retries += int(attempt > 1)
        fetch.grant = call.kind
        fetch.credentials_sent |= sends
        fetch.set(realm)
    attrs: dict[str, Value] = {
        **realm,
        "http.request.method": call.method,
        "aociauth.grant": call.kind,
        "aociauth.attempt": attempt,
        "aociauth.credentials.sent": sends,
    }
    return _span("aociauth.token_request", attrs, Recorder)


# -- values ------------------------------------------------------------------------


def _size(scope: Scope) -> int:
    """How many resource scopes ``scope`` holds (-1 for the unlimited scope)."""
    return -1 if scope.is_unlimited() else len(scope)


def _names(scope: Scope) -> tuple[str, ...]:
    return ("*",) if scope.is_unlimited() else tuple(str(rs) for rs in scope)


def _credential_kind(entry: ConfigEntry) -> str:
    if entry.refresh_token:
        return "identity_token"
    if entry.access_token:
        return "registry_token"
    if entry.username or entry.password:
        return "basic"
    return "none"
