"""The engine's tracing port: spans around starts, drives, attempts and compensations.

The engine calls a :class:`SagaTracer` at four points and knows nothing of any tracing
library. The default, :data:`NO_TRACER`, does nothing: one method call returning a shared
object at each point. :mod:`cloudphone.saga.otel` implements the port with OpenTelemetry.

A *drive* is one worker driving a run for as long as it holds the lease: a run retried after a
durable backoff, taken over after a crash or handed back at shutdown has several drives, in as
many processes. Each is its own span; the trace context stored with the run at its start
(:attr:`StartSpan.trace_context`) makes them all children of the start, in one trace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cloudphone.saga.progress import RunState

TraceContext = dict[str, str]
"""W3C trace context headers (``traceparent``, ``tracestate``), as stored with a run."""


class Span(Protocol):
    """A span the engine opened; it ends it exactly once."""

    def end(self, outcome: str, error: BaseException | None = None) -> None:
        """Record ``outcome`` (and the error, if any) and end the span.

        Args:
            outcome: What happened: for attempts the step metric's outcome (``success``,
                ``failure``, ``timeout``, ``postponed``, ``compensated``…) or why the attempt
                was cut short (``lease_lost``, ``store_failure``, ``interrupted``); for drives
                how the drive ended (``released``, ``finished``, ``lease_lost``…).
            error: The exception that made it fail, recorded on the span.
        """
        ...


class StartSpan(Protocol):
    """The span of one ``start()``; its context is stored with the run it inserts."""

    @property
    def trace_context(self) -> TraceContext | None:
        """Headers to store with the run (None: the run is not traced)."""
        ...

    def end(self, saga_id: str | None, outcome: str, error: BaseException | None = None) -> None:
        """End the span: ``outcome`` is ``started``, ``existing`` (idempotent repeat), ``error``."""
        ...


class SagaTracer(Protocol):
    """What the engine calls to trace its work. Every method must be cheap and never raise."""

    def start(self, saga_type: str) -> StartSpan:
        """Open the span of a ``start()`` in the caller's current trace context."""
        ...

    def drive(self, state: RunState) -> Span:
        """Open the span of one drive of a run, made current until it ends.

        Its parent is the trace context stored with the run (``state.trace_context``).
        """
        ...

    def attempt(self, state: RunState, step: str, compensating: bool) -> Span:
        """Open the span of one attempt of ``step`` (or of its compensation), made current."""
        ...


class _NoSpan:
    """A span that records nothing (shared: it has no state)."""

    __slots__ = ()

    @property
    def trace_context(self) -> TraceContext | None:
        return None

    def end(self, *_args: object, **_kwargs: object) -> None:
        return None


_NO_SPAN = _NoSpan()


class NoTracer:
    """The default tracer: traces nothing and costs one call per point."""

    def start(self, saga_type: str) -> StartSpan:
        """A span that records nothing."""
        return _NO_SPAN

    def drive(self, state: RunState) -> Span:
        """A span that records nothing."""
        return _NO_SPAN

    def attempt(self, state: RunState, step: str, compensating: bool) -> Span:
        """A span that records nothing."""
        return _NO_SPAN


NO_TRACER: SagaTracer = NoTracer()
"""The engine's tracer unless one is given."""
