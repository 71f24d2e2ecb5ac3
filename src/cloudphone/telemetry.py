"""OpenTelemetry for one process: a tracer provider and its exporter, from ``settings.otel``.

Imported only when ``CLOUDPHONE_OTEL__ENABLED`` is on (by
:func:`cloudphone.adapters.build_telemetry`): it needs the ``otel`` extra. The provider is the
process's own, passed explicitly to the saga engine's tracer and to FastAPI's
instrumentation, never installed as the global one.
"""

from __future__ import annotations

import asyncio
import sys
from typing import IO, TYPE_CHECKING

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from cloudphone.saga.otel import OpenTelemetryTracer
from cloudphone.settings import OtelConfig

if TYPE_CHECKING:
    from fastapi import FastAPI

UNTRACED_ROUTES = "/healthz,/readyz,/metrics"
"""Probes and scrapes: frequent and uninteresting, never traced."""


class Telemetry:
    """This process's tracing: one tracer provider, the saga tracer on it, and its shutdown.

    Args:
        config: The ``otel`` settings section.
        processor: Where finished spans go; default: batched to the configured exporter
            (tests pass a ``SimpleSpanProcessor`` over an ``InMemorySpanExporter``).
    """

    def __init__(self, config: OtelConfig, processor: SpanProcessor | None = None) -> None:
        self.config = config
        self._file: IO[str] | None = None
        if processor is None:
            processor = BatchSpanProcessor(
                self._exporter(),
                schedule_delay_millis=config.export_delay.total_seconds() * 1000,
            )
        self.provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: config.service_name})
        )
        self.provider.add_span_processor(processor)
        self.saga_tracer = OpenTelemetryTracer(self.provider)
        """The engine's tracer (see :class:`cloudphone.saga.SagaEngine`'s ``tracer``)."""

    def _exporter(self) -> SpanExporter:
        if self.config.exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter(endpoint=self.config.endpoint)
        if self.config.console_file is not None:
            self.config.console_file.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.config.console_file.open("a", encoding="utf-8")
        return ConsoleSpanExporter(out=self._file or sys.stdout, formatter=_json_line)

    def instrument(self, app: FastAPI) -> None:
        """Trace every request of ``app`` (but probes), joining a caller's ``traceparent``."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=self.provider, excluded_urls=UNTRACED_ROUTES
        )

    async def close(self) -> None:
        """Export what is still queued, then stop (off the event loop: it may wait on I/O)."""
        await asyncio.to_thread(self.provider.shutdown)
        if self._file is not None:
            self._file.close()
            self._file = None


def _json_line(span: ReadableSpan) -> str:
    line: str = span.to_json(indent=None)
    return line + "\n"
