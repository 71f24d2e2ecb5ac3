"""OpenTelemetry for the engine: an implementation of :class:`~cloudphone.saga.tracing.SagaTracer`.

Needs ``opentelemetry-api`` (the ``otel`` extra); nothing imports this module unless tracing is
turned on. Spans:

- ``saga.start <type>`` (producer) in the caller's context (an HTTP request's span, say); its
  W3C trace context is what the run stores;
- ``saga.run <type>`` (consumer), one per drive, a child of the stored context, so drives in
  other processes and after retries or takeovers join the start's trace;
- ``saga.step <step>`` and ``saga.compensate <step>``, one per attempt, children of the drive.

Attributes: ``saga.id``, ``saga.type``, ``saga.step``, ``saga.attempt``, ``saga.outcome``
(and ``saga.worker``, ``saga.status`` on drives). A failed attempt records its exception and
sets the span's status to ERROR; an attempt postponed (``RetryLater``), cut by the deadline or
cancelled by an operator only says so in ``saga.outcome``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cloudphone.saga.tracing import Span, StartSpan, TraceContext

if TYPE_CHECKING:
    from cloudphone.saga.progress import RunState

_PROPAGATOR = TraceContextTextMapPropagator()
"""W3C trace context only: baggage (which may carry anything) is never stored with a run."""

INSTRUMENTATION_NAME = "cloudphone.saga"
"""Name of the tracer the engine's spans come from."""


def _finish(span: trace.Span, outcome: str, error: BaseException | None) -> None:
    span.set_attribute("saga.outcome", outcome)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


class _Started:
    """The span of a start; not made current (the caller's own span stays current)."""

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        carrier: TraceContext = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        self._context = carrier or None

    @property
    def trace_context(self) -> TraceContext | None:
        return self._context

    def end(self, saga_id: str | None, outcome: str, error: BaseException | None = None) -> None:
        if saga_id is not None:
            self._span.set_attribute("saga.id", saga_id)
        _finish(self._span, outcome, error)


class _Current:
    """A span made current in this task until it ends (so user code's spans nest under it)."""

    def __init__(self, span: trace.Span, state: RunState | None = None) -> None:
        self._span = span
        self._state = state
        self._token = context.attach(trace.set_span_in_context(span))

    def end(self, outcome: str, error: BaseException | None = None) -> None:
        context.detach(self._token)
        if self._state is not None:
            self._span.set_attribute("saga.status", self._state.status.value)
        _finish(self._span, outcome, error)


class OpenTelemetryTracer:
    """The engine's spans through an OpenTelemetry tracer provider.

    Args:
        tracer_provider: Where spans go; the global provider when None.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)

    def start(self, saga_type: str) -> StartSpan:
        """Open ``saga.start <type>`` in the current context."""
        span = self._tracer.start_span(
            f"saga.start {saga_type}", kind=SpanKind.PRODUCER, attributes={"saga.type": saga_type}
        )
        return _Started(span)

    def drive(self, state: RunState) -> Span:
        """Open ``saga.run <type>`` as a child of the run's stored trace context."""
        parent = _PROPAGATOR.extract(state.trace_context) if state.trace_context else None
        span = self._tracer.start_span(
            f"saga.run {state.saga_type}",
            # Without a stored context the drive starts its own trace, whatever the task's
            # context happens to hold (the request that inserted the run, for a local claim).
            context=parent if parent is not None else context.Context(),
            kind=SpanKind.CONSUMER,
            attributes={
                "saga.id": state.id,
                "saga.type": state.saga_type,
                "saga.worker": state.worker or "",
            },
        )
        return _Current(span, state)

    def attempt(self, state: RunState, step: str, compensating: bool) -> Span:
        """Open ``saga.step <step>`` or ``saga.compensate <step>`` under the current drive."""
        kind = "compensate" if compensating else "step"
        span = self._tracer.start_span(
            f"saga.{kind} {step}",
            attributes={
                "saga.id": state.id,
                "saga.type": state.saga_type,
                "saga.step": step,
                "saga.attempt": state.attempt,
                "saga.compensating": compensating,
            },
        )
        return _Current(span)
