"""Conversions between table rows and the engine's records."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from cloudphone.saga.outputs import merged_data
from cloudphone.saga.progress import NewEvent, Progress
from cloudphone.saga.records import ErrorInfo, EventKind, SagaEvent, SagaRun
from cloudphone.saga.state import SagaStatus
from cloudphone.saga.store.base import NewRun


def new_run_values(new: NewRun, lease: timedelta) -> dict[str, Any]:
    """Every ``saga_runs`` column of a new run (claimed when ``new.owner`` is set)."""
    return {
        "id": new.id,
        "saga_type": new.saga_type,
        "status": (SagaStatus.RUNNING if new.owner else SagaStatus.PENDING).value,
        "current_step": new.first_step,
        "attempt": 1,
        "data": new.data,
        "outputs": dict(new.outputs or {}),
        "error": None,
        "compensation_cause": None,
        "idempotency_key": new.idempotency_key,
        "started_by": new.started_by,
        "epoch": 1,
        "owner": new.owner,
        "lease_expires_at": new.now + lease if new.owner else None,
        "next_run_at": new.now,
        "deadline_at": new.deadline_at,
        "deadline_noted": False,
        "cancel_requested": False,
        "last_seq": 1,
        "resolution": None,
        "created_at": new.now,
        "updated_at": new.now,
        "finished_at": None,
        "trace_context": new.trace_context,
        "saga_version": new.saga_version,
        "forked_from": new.forked_from,
        "retry_since": None,
    }


def start_detail(new: NewRun) -> dict[str, Any]:
    """Detail of the ``saga_started`` event."""
    detail = {"idempotency_key": new.idempotency_key} if new.idempotency_key else {}
    return {**detail, **new.detail} if new.detail else detail


def run_from_row(row: Mapping[Any, Any]) -> SagaRun:
    """Build a SagaRun from a ``saga_runs`` row (``data`` merged from input and outputs)."""
    input_data, outputs = dict(row["data"]), dict(row["outputs"] or {})
    return SagaRun(
        id=row["id"],
        saga_type=row["saga_type"],
        status=SagaStatus(row["status"]),
        current_step=row["current_step"],
        data=merged_data(input_data, outputs) if outputs else dict(input_data),
        error=ErrorInfo.from_dict(row["error"]),
        attempt=row["attempt"],
        compensation_cause=row["compensation_cause"],
        idempotency_key=row["idempotency_key"],
        started_by=row["started_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        deadline_at=row["deadline_at"],
        deadline_noted=bool(row["deadline_noted"]),
        next_run_at=row["next_run_at"],
        owner=row["owner"],
        lease_expires_at=row["lease_expires_at"],
        epoch=row["epoch"],
        cancel_requested=bool(row["cancel_requested"]),
        resolution=row["resolution"],
        last_seq=row["last_seq"],
        trace_context=row["trace_context"],
        saga_version=row["saga_version"],
        forked_from=row["forked_from"],
        input=input_data,
        outputs=outputs,
        retry_since=row["retry_since"],
    )


def event_from_row(row: Mapping[Any, Any]) -> SagaEvent:
    """Build a SagaEvent from a ``saga_events`` row."""
    return SagaEvent(
        seq=row["seq"],
        kind=EventKind(row["kind"]),
        step=row["step"],
        attempt=row["attempt"],
        detail=dict(row["detail"]),
        at=row["at"],
    )


def event_rows(
    run_id: str, first_seq: int, events: tuple[NewEvent, ...] | list[NewEvent]
) -> list[dict[str, Any]]:
    """Rows for ``saga_events``, numbered from ``first_seq``."""
    return [
        {
            "saga_id": run_id,
            "seq": first_seq + i,
            "kind": e.kind.value,
            "step": e.step,
            "attempt": e.attempt,
            "detail": e.detail,
            "at": e.at,
        }
        for i, e in enumerate(events)
    ]


def progress_values(progress: Progress, lease_until: datetime | None) -> dict[str, Any]:
    """Column values a Progress sets (owner and epoch are handled by the caller).

    ``lease_until`` is the lease end to write when the progress keeps the lease; callers take
    it from the clock once they hold the lock or connection, so it is never born expired.
    """
    return {
        "status": progress.status.value,
        "current_step": progress.step,
        "attempt": progress.attempt,
        "error": progress.error.to_dict() if progress.error else None,
        "compensation_cause": progress.compensation_cause,
        "lease_expires_at": lease_until if progress.keep_lease else None,
        "next_run_at": progress.next_run_at,
        "finished_at": progress.now if progress.finished else None,
        "deadline_noted": progress.deadline_noted,
        "updated_at": progress.now,
        "retry_since": progress.retry_since,
    }


def isoformat(at: datetime) -> str:
    """Timestamp as ISO 8601 text (for JSON payloads)."""
    return at.isoformat()
