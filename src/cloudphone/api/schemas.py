"""Response and request models shared by the routes: saga runs, their history, pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from cloudphone.saga import EventKind, SagaEvent, SagaRun, SagaStatus


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date-time out of range") from None


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""An RFC 3339 date-time with an offset, normalised to UTC (naive times are refused)."""

CreatedAfter = Annotated[UtcDatetime | None, Query(description="Created at or after (RFC 3339).")]
"""The ``created_after`` filter of a list."""
CreatedBefore = Annotated[UtcDatetime | None, Query(description="Created before (RFC 3339).")]
"""The ``created_before`` filter of a list."""


class SagaError(BaseModel):
    """Why the last attempt failed."""

    type: str = Field(description="Exception type.")
    message: str
    step: str | None = None


class SagaAccepted(BaseModel):
    """A saga was started; follow it at ``url``."""

    id: str = Field(description="The saga run id.")
    saga_type: str
    url: str = Field(description="Where to read its status: `GET /sagas/{id}`.")

    @classmethod
    def of(cls, saga_id: str, saga_type: str) -> SagaAccepted:
        """The body of a 202 for a run just started."""
        return cls(id=saga_id, saga_type=saga_type, url=f"/sagas/{saga_id}")


class SagaSummary(BaseModel):
    """A saga run's current state."""

    id: str
    saga_type: str
    saga_version: int = Field(
        description="Version of the saga definition the run is pinned to (it finishes on it "
        "unless an operator migrates it)."
    )
    status: SagaStatus
    current_step: str | None = Field(description="Step being run, retried or compensated.")
    attempt: int = Field(description="Attempt number of the current step.")
    error: SagaError | None = Field(description="The last failure, if any.")
    compensation_cause: str | None = Field(description="failed, timed_out or cancelled.")
    needs_attention: bool = Field(description="FAILED and not yet resolved by an operator.")
    resolution: str | None = Field(description="The note of the operator who resolved it.")
    cancel_requested: bool
    started_by: str | None = Field(description="User id of who started it.")
    idempotency_key: str | None
    owner: str | None = Field(description="Worker holding its lease.")
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    deadline_at: datetime | None
    next_run_at: datetime | None = Field(description="When a worker picks it up next.")
    forked_from: str | None = Field(description="The run this one was forked from, if any.")

    @classmethod
    def of(cls, run: SagaRun) -> SagaSummary:
        """The summary of a stored run."""
        return cls(**_summary_fields(run))


class SagaEventOut(BaseModel):
    """One entry of a run's append-only history."""

    seq: int = Field(description="Position in the history, from 1, without gaps.")
    kind: EventKind
    step: str | None
    attempt: int | None
    detail: dict[str, Any]
    at: datetime

    @classmethod
    def of(cls, event: SagaEvent) -> SagaEventOut:
        """The API form of a stored event."""
        return cls(
            seq=event.seq,
            kind=event.kind,
            step=event.step,
            attempt=event.attempt,
            detail=event.detail,
            at=event.at,
        )


class SagaDetail(SagaSummary):
    """A saga run with its data and full history."""

    data: dict[str, Any] = Field(description="The input plus every completed step's output.")
    epoch: int = Field(description="Fencing token, bumped by every claim and operator action.")
    lease_expires_at: datetime | None
    history: list[SagaEventOut]

    @classmethod
    def with_history(cls, run: SagaRun, events: list[SagaEvent]) -> SagaDetail:
        """The detail of a stored run and its events."""
        return cls(
            **_summary_fields(run),
            data=run.data,
            epoch=run.epoch,
            lease_expires_at=run.lease_expires_at,
            history=[SagaEventOut.of(e) for e in events],
        )


class SagaPage(BaseModel):
    """One page of saga runs, newest first."""

    items: list[SagaSummary]
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")


class RetryRequest(BaseModel):
    """Resume a FAILED saga at the step that failed."""

    note: str | None = Field(default=None, max_length=2000, description="Why, for the history.")


class MigrateRequest(BaseModel):
    """Move a run to another registered version of its saga."""

    to_version: int = Field(ge=1, le=1_000_000, description="The version to move it to.")
    note: str | None = Field(default=None, max_length=2000, description="Why, for the history.")


class ForkRequest(BaseModel):
    """Start a new run of a finished one from a chosen step."""

    from_step: str = Field(
        min_length=1, max_length=100, description="The first step the fork runs again."
    )
    note: str | None = Field(default=None, max_length=2000, description="Why, for the history.")
    force: bool = Field(
        default=False,
        description="Fork even across a pivot the original completed, or after a step it undid "
        "or never completed (both histories say so).",
    )


class ResolveRequest(BaseModel):
    """Close a FAILED saga by hand."""

    note: str = Field(
        min_length=1, max_length=2000, pattern=r"\S", description="What was done by hand."
    )


def _summary_fields(run: SagaRun) -> dict[str, Any]:
    error = run.error
    return {
        "id": run.id,
        "saga_type": run.saga_type,
        "saga_version": run.saga_version,
        "status": run.status,
        "current_step": run.current_step,
        "attempt": run.attempt,
        "error": SagaError(**error.to_dict()) if error is not None else None,
        "compensation_cause": run.compensation_cause,
        "needs_attention": run.status is SagaStatus.FAILED and run.resolution is None,
        "resolution": run.resolution,
        "cancel_requested": run.cancel_requested,
        "started_by": run.started_by,
        "idempotency_key": run.idempotency_key,
        "owner": run.owner,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "finished_at": run.finished_at,
        "deadline_at": run.deadline_at,
        "next_run_at": run.next_run_at,
        "forked_from": run.forked_from,
    }
