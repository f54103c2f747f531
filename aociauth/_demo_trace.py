"""``aociauth demo --trace``: the demo's spans, kept in memory and printed as a tree.

The OpenTelemetry SDK's in-memory exporter collects the spans aociauth makes
(see :mod:`aociauth._trace`) under one ``aociauth demo`` span; the tree shows
the first few children of each name under a parent and folds the rest into
one line with their count and outcomes, since the demo makes a token fetch per
repository.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["SpanRecorder", "render_tree"]

#: Children of one name shown under a parent before the rest are folded.
SHOWN = 3


class SpanRecorder:
    """Collects every span this process ends from now on, in memory.

    Raises ImportError without the OpenTelemetry SDK (``opentelemetry-sdk``).
    """

    def __init__(self) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self._exporter = InMemorySpanExporter()
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            # Nobody set one up (tracing is the application's choice; here, ours).
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        self._tracer = provider.get_tracer("aociauth.demo")

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        """A span around the block: the root of what aociauth records inside it."""
        with self._tracer.start_as_current_span(name):
            yield

    def spans(self) -> tuple[ReadableSpan, ...]:
        """The spans ended so far, in the order they ended."""
        return tuple(self._exporter.get_finished_spans())


def render_tree(spans: Sequence[ReadableSpan], out: TextIO, shown: int = SHOWN) -> None:
    """Print ``spans`` as a tree, children in the order they started, with a count first."""
    known = {s.context.span_id for s in spans if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = defaultdict(list)
    for s in sorted(spans, key=lambda s: s.start_time or 0):
        parent = s.parent.span_id if s.parent is not None else None
        children[parent if parent in known else None].append(s)
    counts = Counter(s.name for s in spans)
    tally = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    print(f"trace: {len(spans)} spans ({tally})", file=out)
    _walk(children, None, {}, "", False, out, shown)


def _walk(
    children: dict[int | None, list[ReadableSpan]],
    parent: int | None,
    above: Mapping[str, object],
    prefix: str,
    nested: bool,
    out: TextIO,
    shown: int,
) -> None:
    kept: list[ReadableSpan] = []
    folded: dict[str, list[ReadableSpan]] = defaultdict(list)
    seen: Counter[str] = Counter()
    for s in children.get(parent, []):
        seen[s.name] += 1
        if seen[s.name] <= shown:
            kept.append(s)
        else:
            folded[s.name].append(s)
    lines: list[ReadableSpan | tuple[str, list[ReadableSpan]]] = [*kept, *folded.items()]
    for i, item in enumerate(lines):
        last = i == len(lines) - 1
        if not nested:
            branch, below = "", ""
        elif last:
            branch, below = "└─ ", "   "
        else:
            branch, below = "├─ ", "│  "
        if isinstance(item, tuple):
            print(f"{prefix}{branch}{_fold(*item)}", file=out)
            continue
        print(f"{prefix}{branch}{_describe(item, above)}", file=out)
        if item.context is not None:
            attrs = item.attributes or {}
            _walk(children, item.context.span_id, attrs, prefix + below, True, out, shown)


def _describe(span: ReadableSpan, above: Mapping[str, object]) -> str:
    """One line: name, duration, and the attributes not said the same way by the parent."""
    parts = [span.name, f"{_ms(span):.1f} ms"]
    for key, value in (span.attributes or {}).items():
        if above.get(key) == value:
            continue
        if isinstance(value, (tuple, list)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        parts.append(f"{key.removeprefix('aociauth.')}={value}")
    if span.status.status_code.name == "ERROR":
        parts.append(f"ERROR({span.status.description})")
    return "  ".join([*parts[:2], " ".join(parts[2:])]).rstrip()


def _fold(name: str, spans: list[ReadableSpan]) -> str:
    outcomes = Counter(str((s.attributes or {}).get("aociauth.outcome", "?")) for s in spans)
    said = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
    times = sorted(_ms(s) for s in spans)
    return f"… {len(spans)} more {name} ({said}; {times[0]:.1f} to {times[-1]:.1f} ms)"


def _ms(span: ReadableSpan) -> float:
    if span.start_time is None or span.end_time is None:
        return 0.0
    return (span.end_time - span.start_time) / 1e6
