"""The saga page's step plan, data snapshots, redaction and timeline (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudphone.console.plan import REDACTED, data_after_steps, redact, step_plan
from cloudphone.console.timeline import timeline
from cloudphone.saga import EventKind, Saga, SagaEvent, SagaRun, SagaStatus, StepContext

K = EventKind
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def saga() -> Saga:
    """HOLD (undoable) → CHARGE (pivot) → RECORD."""
    definition = Saga("shop")

    @definition.step("HOLD")
    async def hold(ctx: StepContext) -> None: ...

    @hold.compensate
    async def release(ctx: StepContext) -> None: ...

    @definition.step("CHARGE", pivot=True)
    async def charge(ctx: StepContext) -> None: ...

    @definition.step("RECORD")
    async def record(ctx: StepContext) -> None: ...

    return definition


def run(status: SagaStatus, step: str | None, data: dict[str, Any], **changes: Any) -> SagaRun:
    base = SagaRun(
        id="r1",
        saga_type="shop",
        status=status,
        current_step=step,
        data=data,
        error=None,
        attempt=1,
        compensation_cause=None,
        idempotency_key=None,
        started_by="alice",
        created_at=T0,
        updated_at=T0,
        finished_at=None,
        deadline_at=None,
        deadline_noted=False,
        next_run_at=None,
        owner=None,
        lease_expires_at=None,
        epoch=1,
        cancel_requested=False,
        resolution=None,
    )
    return replace(base, **changes)


def event(seq: int, kind: EventKind, step: str | None = None, **detail: Any) -> SagaEvent:
    return SagaEvent(seq, kind, step, 1, detail, T0 + timedelta(seconds=seq))


def test_the_plan_lists_every_step_with_its_state_attempts_and_time() -> None:
    """Done, failed and not reached steps; the pivot's kind; failed attempts count."""
    events = [
        event(1, K.SAGA_STARTED),
        event(2, K.STEP_SUCCEEDED, "HOLD", duration_ms=5.0),
        event(3, K.STEP_FAILED, "CHARGE", duration_ms=10.0),
        event(4, K.RETRY_SCHEDULED, "CHARGE"),
        event(5, K.STEP_FAILED, "CHARGE", duration_ms=20.0),
        event(6, K.SAGA_FAILED),
    ]
    plan = step_plan(saga(), run(SagaStatus.FAILED, "CHARGE", {}), events)
    assert [(s.name, s.kind, s.state, s.attempts) for s in plan] == [
        ("HOLD", "compensatable", "done", 1),
        ("CHARGE", "pivot", "failed", 2),
        ("RECORD", "retriable", "not reached", 0),
    ]
    assert plan[1].duration_ms == 30.0
    assert plan[0].compensable
    assert not plan[2].compensable
    assert plan[1].current


def test_a_running_step_is_running_then_retrying_after_a_failure() -> None:
    """The step the run is at reads running; after a failed attempt, retrying."""
    started = [event(1, K.SAGA_STARTED)]
    assert step_plan(saga(), run(SagaStatus.RUNNING, "HOLD", {}), started)[0].state == "running"
    failed = [*started, event(2, K.STEP_FAILED, "HOLD"), event(3, K.RETRY_SCHEDULED, "HOLD")]
    assert step_plan(saga(), run(SagaStatus.RUNNING, "HOLD", {}), failed)[0].state == "retrying"


def test_compensated_steps_read_compensated() -> None:
    """After compensation the undone step says so, and nothing is current once finished."""
    events = [
        event(1, K.SAGA_STARTED),
        event(2, K.STEP_SUCCEEDED, "HOLD"),
        event(3, K.STEP_FAILED, "CHARGE"),
        event(4, K.COMPENSATION_STARTED),
        event(5, K.COMPENSATION_SUCCEEDED, "HOLD"),
        event(6, K.SAGA_COMPENSATED),
    ]
    plan = step_plan(saga(), run(SagaStatus.COMPENSATED, None, {}), events)
    assert [s.state for s in plan] == ["compensated", "failed", "not reached"]
    compensating = step_plan(saga(), run(SagaStatus.COMPENSATING, "HOLD", {}), events[:4])
    assert compensating[0].state == "compensating"


def test_without_a_definition_the_plan_is_the_steps_the_history_names() -> None:
    """An unknown saga type still shows the steps seen, kind unknown."""
    events = [event(1, K.SAGA_STARTED), event(2, K.STEP_SUCCEEDED, "X")]
    plan = step_plan(None, run(SagaStatus.RUNNING, "Y", {}), events)
    assert [(s.name, s.kind, s.state) for s in plan] == [("X", "unknown", "done")]


def test_data_after_each_step_is_the_input_then_each_output_so_far() -> None:
    """Each snapshot adds the step's kept output to what came before: exact, no guessing."""
    outputs = {"HOLD": {"held": True}, "CHARGE": {"charge": "ch_1", "api_key": "k"}}
    events = [
        event(1, K.SAGA_STARTED),
        event(2, K.STEP_SUCCEEDED, "HOLD"),
        event(3, K.STEP_FAILED, "CHARGE"),
        event(4, K.STEP_SUCCEEDED, "CHARGE"),
    ]
    current = run(SagaStatus.RUNNING, "RECORD", {}, input={"order": 1}, outputs=outputs)
    snaps = data_after_steps(current, events)
    assert snaps is not None
    assert [(s.step, s.data, s.added) for s in snaps] == [
        ("HOLD", {"order": 1, "held": True}, ["held"]),
        (
            "CHARGE",
            {"order": 1, "held": True, "charge": "ch_1", "api_key": REDACTED},
            ["api_key", "charge"],
        ),
    ]


def test_a_step_that_returned_nothing_adds_nothing() -> None:
    events = [event(1, K.SAGA_STARTED), event(2, K.STEP_SUCCEEDED, "HOLD")]
    current = run(SagaStatus.RUNNING, "CHARGE", {}, input={"a": 1}, outputs={"HOLD": None})
    assert [(s.data, s.added) for s in data_after_steps(current, events) or []] == [({"a": 1}, [])]


def test_runs_from_before_per_step_outputs_are_not_reconstructed() -> None:
    """A run whose succeeded step has no kept output gets None, not made-up data."""
    events = [event(1, K.SAGA_STARTED), event(2, K.STEP_SUCCEEDED, "HOLD")]
    assert data_after_steps(run(SagaStatus.RUNNING, "CHARGE", {"a": 1}), events) is None


def test_secrets_are_redacted_by_key_at_any_depth() -> None:
    """Keys naming secrets are hidden in nested dicts and lists; other values stay."""
    data = {
        "api_key": "k",
        "user": {"password": "p", "name": "n"},
        "cards": [{"card_number": "4242", "last4": "4242"}],
        "Authorization": "Bearer x",
        "refund_id": "r1",
    }
    assert redact(data) == {
        "api_key": REDACTED,
        "user": {"password": REDACTED, "name": "n"},
        "cards": [{"card_number": REDACTED, "last4": "4242"}],
        "Authorization": REDACTED,
        "refund_id": "r1",
    }


def test_the_timeline_is_newest_first_with_errors_and_facts() -> None:
    """Errors, workers, operators and notes become facts; the newest event comes first."""
    events = [
        event(1, K.SAGA_STARTED),
        event(
            2,
            K.STEP_FAILED,
            "HOLD",
            error={"type": "Boom", "message": "no"},
            worker="w1",
            duration_ms=3.0,
        ),
        event(3, K.LEASE_TAKEOVER, "HOLD", previous_owner="w1", worker="w2"),
        event(4, K.OPERATOR_RESOLVED, "HOLD", actor="root", note="fixed by hand"),
    ]
    entries = timeline(events)
    assert [e.kind for e in entries] == [
        "operator_resolved",
        "lease_takeover",
        "step_failed",
        "saga_started",
    ]
    assert dict(entries[0].facts) == {"by": "root", "note": "fixed by hand"}
    assert dict(entries[1].facts) == {"previous owner": "w1", "worker": "w2"}
    assert entries[2].error == ("Boom", "no")
    assert dict(entries[2].facts)["took"] == ("ms", 3.0)
