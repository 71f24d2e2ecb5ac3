"""Tracing: a run is one trace (start, each drive, each attempt and compensation).

Whatever engine inserts it and whatever engine drives it: its start's trace context is stored
with it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry import baggage, context
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id

from cloudphone.saga import (
    NonRetryableError,
    RetryLater,
    Saga,
    SagaEngine,
    SagaRun,
    SagaStatus,
    StepContext,
)
from cloudphone.saga.otel import OpenTelemetryTracer
from tests.support.sagas import Recorder, build_saga
from tests.support.tracing import (
    SpanLog,
    attributes,
    parent_span_id,
    span_id,
    summary,
    trace_id,
)

START_MODES = ["claimed_by_insert", "other_engine", "in_callers_transaction"]


async def _traced_run(
    make_engine: Callable[..., SagaEngine], saga: Saga, log: SpanLog
) -> tuple[str, SagaRun]:
    """Start one run of ``saga`` on a traced engine with a worker; return it once terminal."""
    engine = make_engine([saga], tracer=OpenTelemetryTracer(log.provider))
    await engine.create_schema()
    async with engine.worker(concurrency=2):
        saga_id = await engine.start(saga.name, {})
        return saga_id, await engine.wait(saga_id, timeout=timedelta(seconds=10))


async def _start(mode: str, engines: list[SagaEngine], saga: Saga) -> str:
    """Start a run the way ``mode`` says; returns its id once it is terminal."""
    starter, driver = engines
    if mode == "in_callers_transaction":
        async with starter.db.begin() as conn:
            return await starter.start(saga.name, {"n": 1}, session=conn)
    return await (driver if mode == "claimed_by_insert" else starter).start(saga.name, {"n": 1})


@pytest.mark.parametrize("mode", START_MODES)
async def test_a_run_is_one_trace_under_the_span_that_started_it(
    make_engine: Callable[..., SagaEngine], unique: str, mode: str
) -> None:
    """Request span → saga.start → saga.run (drive) → saga.step per attempt, one trace id."""
    log = SpanLog()
    saga = build_saga(f"traced_{unique}", Recorder())
    tracer = OpenTelemetryTracer(log.provider)
    starter = make_engine([saga], tracer=tracer, worker_id=f"starter-{unique}")
    driver = make_engine([saga], tracer=tracer)
    await starter.create_schema()
    request_tracer = log.provider.get_tracer("test")
    async with driver.worker(concurrency=2):
        with request_tracer.start_as_current_span("POST /things") as request:
            saga_id = await _start(mode, [starter, driver], saga)
        run = await driver.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED

    spans = log.of_run(saga_id)
    assert summary(spans) == [
        (f"saga.start {saga.name}", None, "started"),
        ("saga.step A", 1, "success"),
        ("saga.step B", 1, "success"),
        ("saga.step C", 1, "success"),
        (f"saga.run {saga.name}", None, "finished"),
    ]
    start, *steps, drive = spans
    assert {trace_id(s) for s in spans} == {request.get_span_context().trace_id}
    assert parent_span_id(start) == request.get_span_context().span_id
    assert parent_span_id(drive) == span_id(start)
    assert {parent_span_id(s) for s in steps} == {span_id(drive)}
    assert (start.kind, drive.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert attributes(drive)["saga.status"] == "COMPLETED"
    assert attributes(drive)["saga.worker"] == driver.worker_id
    assert [attributes(s)["saga.step"] for s in steps] == ["A", "B", "C"]
    assert {(attributes(s)["saga.type"], attributes(s)["saga.id"]) for s in spans} == {
        (saga.name, saga_id)
    }
    # Stored with the run: the start span's W3C context, nothing else.
    assert run.trace_context is not None
    assert set(run.trace_context) == {"traceparent"}
    _version, stored_trace, stored_parent, _flags = run.trace_context["traceparent"].split("-")
    assert (stored_trace, stored_parent) == (
        format_trace_id(trace_id(start)),
        format_span_id(span_id(start)),
    )


async def test_retries_are_drives_of_one_trace_and_failed_attempts_record_their_error(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A retried step: attempt 1 is an ERROR span with its exception; every drive joins."""
    log = SpanLog()
    saga = Saga(f"retried_{unique}", retry=build_saga("x", Recorder()).retry)

    @saga.step("FLAKY")
    async def flaky(ctx: StepContext) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("provider unreachable")

    saga_id, run = await _traced_run(make_engine, saga, log)
    assert run.status is SagaStatus.COMPLETED

    attempts = log.of_run(saga_id, "saga.step")
    assert summary(attempts) == [
        ("saga.step FLAKY", 1, "failure"),
        ("saga.step FLAKY", 2, "success"),
    ]
    failed, succeeded = attempts
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ConnectionError: provider unreachable"
    assert [e.name for e in failed.events] == ["exception"]
    assert succeeded.status.status_code is StatusCode.UNSET
    drives = log.of_run(saga_id, "saga.run")
    assert [attributes(d)["saga.outcome"] for d in drives] == ["released", "finished"]
    start = log.of_run(saga_id, "saga.start")[0]
    assert {parent_span_id(d) for d in drives} == {span_id(start)}
    assert {trace_id(s) for s in log.of_run(saga_id)} == {trace_id(start)}


async def test_compensations_have_spans_of_their_own(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A step failing for good: its ERROR span, then one saga.compensate span per undo."""
    log = SpanLog()
    saga = build_saga(f"undone_{unique}", Recorder(), compensated=["A", "B", "C"])

    @saga.step("D")
    async def refuse(ctx: StepContext) -> dict[str, Any]:
        raise NonRetryableError("card declined")

    @refuse.compensate
    async def nothing_to_undo(ctx: StepContext) -> None:
        return None

    saga_id, run = await _traced_run(make_engine, saga, log)
    assert run.status is SagaStatus.COMPENSATED

    spans = [s for s in log.of_run(saga_id) if s.name.startswith(("saga.step", "saga.comp"))]
    assert summary(spans)[3:] == [
        ("saga.step D", 1, "failure"),
        ("saga.compensate D", 1, "compensated"),
        ("saga.compensate C", 1, "compensated"),
        ("saga.compensate B", 1, "compensated"),
        ("saga.compensate A", 1, "compensated"),
    ]
    assert spans[3].status.description == "NonRetryableError: card declined"
    assert {attributes(s)["saga.compensating"] for s in spans[4:]} == {True}
    drive = log.of_run(saga_id, "saga.run")[-1]
    assert attributes(drive)["saga.status"] == "COMPENSATED"


async def test_without_a_tracer_no_trace_context_is_stored(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """The default engine traces nothing, so its runs carry no trace context."""
    saga = build_saga(f"untraced_{unique}", Recorder())
    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.worker(concurrency=2):
        run = await engine.wait(await engine.start(saga.name, {}), timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED
    assert run.trace_context is None


async def test_a_run_started_outside_any_span_still_is_one_trace(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """No caller span: the start span is the root, and the drive is its child."""
    log = SpanLog()
    saga = build_saga(f"rooted_{unique}", Recorder())
    saga_id, _run = await _traced_run(make_engine, saga, log)
    start, drive = log.of_run(saga_id, "saga.start")[0], log.of_run(saga_id, "saga.run")[0]
    assert start.parent is None
    assert parent_span_id(drive) == span_id(start)
    assert trace_id(drive) == trace_id(start)


async def test_a_postponed_attempt_is_no_error(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """RetryLater: the attempt's span says postponed, with no error status or exception."""
    log = SpanLog()
    saga = Saga(f"polled_{unique}")
    polls: list[int] = []

    @saga.step("POLL")
    async def poll(ctx: StepContext) -> None:
        polls.append(ctx.attempt)
        if len(polls) == 1:
            raise RetryLater("provider still processing", delay=timedelta(milliseconds=10))

    saga_id, run = await _traced_run(make_engine, saga, log)
    assert run.status is SagaStatus.COMPLETED
    postponed = log.of_run(saga_id, "saga.step")[0]
    assert attributes(postponed)["saga.outcome"] == "postponed"
    assert postponed.status.status_code is StatusCode.UNSET
    assert list(postponed.events) == []


async def test_baggage_of_the_caller_is_never_stored_with_the_run(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Only traceparent/tracestate are kept: baggage may carry anything, secrets included."""
    log = SpanLog()
    saga = build_saga(f"baggage_{unique}", Recorder())
    engine = make_engine([saga], tracer=OpenTelemetryTracer(log.provider))
    await engine.create_schema()
    token = context.attach(baggage.set_baggage("session", "s3cr3t"))
    try:
        with log.provider.get_tracer("test").start_as_current_span("caller"):
            saga_id = await engine.start(saga.name, {})
    finally:
        context.detach(token)
    stored = (await engine.get(saga_id)).trace_context
    assert stored is not None
    assert set(stored) == {"traceparent"}
    assert "s3cr3t" not in str(stored)
