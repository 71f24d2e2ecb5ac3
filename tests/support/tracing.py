"""Spans a test can read: an OpenTelemetry provider exporting to memory, and span lookups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class SpanLog:
    """A tracer provider whose finished spans are kept in memory, in the order they ended."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.processor = SimpleSpanProcessor(self.exporter)
        self.provider = TracerProvider()
        self.provider.add_span_processor(self.processor)

    def spans(self, prefix: str = "") -> list[ReadableSpan]:
        """Finished spans whose name starts with ``prefix``."""
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(prefix)]

    def of_run(self, saga_id: str, prefix: str = "saga.") -> list[ReadableSpan]:
        """Finished engine spans of one run."""
        return [s for s in self.spans(prefix) if attributes(s).get("saga.id") == saga_id]


def attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """The span's attributes (never None)."""
    return span.attributes or {}


def trace_id(span: ReadableSpan) -> int:
    """The span's trace id."""
    assert span.context is not None
    return span.context.trace_id


def parent_span_id(span: ReadableSpan) -> int | None:
    """The span id of the span's parent, None for a root."""
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    """The span's own id."""
    assert span.context is not None
    return span.context.span_id


def summary(spans: Sequence[ReadableSpan]) -> list[tuple[str, Any, Any]]:
    """``(name, saga.attempt, saga.outcome)`` of each span, for readable assertions."""
    return [
        (s.name, attributes(s).get("saga.attempt"), attributes(s).get("saga.outcome"))
        for s in spans
    ]
