"""The saga detail's timeline: each history event as a label, a tone and its facts (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloudphone.saga import EventKind, SagaEvent

_KINDS: dict[EventKind, tuple[str, str]] = {
    EventKind.SAGA_STARTED: ("Started", "neutral"),
    EventKind.STEP_SUCCEEDED: ("Step succeeded", "ok"),
    EventKind.STEP_FAILED: ("Step failed", "bad"),
    EventKind.STEP_POSTPONED: ("Step postponed", "neutral"),
    EventKind.RETRY_SCHEDULED: ("Retry scheduled", "warn"),
    EventKind.COMPENSATION_STARTED: ("Compensation started", "warn"),
    EventKind.COMPENSATION_SUCCEEDED: ("Compensated", "muted"),
    EventKind.COMPENSATION_FAILED: ("Compensation failed", "bad"),
    EventKind.DEADLINE_EXCEEDED: ("Deadline exceeded", "bad"),
    EventKind.DEADLINE_PASSED: ("Deadline passed after the pivot", "warn"),
    EventKind.LEASE_TAKEOVER: ("Lease taken over", "warn"),
    EventKind.CANCEL_REQUESTED: ("Cancel requested", "warn"),
    EventKind.CANCEL_REJECTED: ("Cancel rejected", "warn"),
    EventKind.OPERATOR_RETRY: ("Operator retry", "info"),
    EventKind.OPERATOR_RESOLVED: ("Resolved by an operator", "info"),
    EventKind.OPERATOR_MIGRATED: ("Moved to another version", "info"),
    EventKind.RUN_FORKED: ("Forked", "info"),
    EventKind.SAGA_COMPLETED: ("Completed", "ok"),
    EventKind.SAGA_COMPENSATED: ("Compensated (saga)", "muted"),
    EventKind.SAGA_TIMED_OUT: ("Timed out", "warn"),
    EventKind.SAGA_FAILED: ("Failed: needs an operator", "bad"),
}

_FACTS: tuple[tuple[str, str], ...] = (
    ("actor", "by"),
    ("note", "note"),
    ("reason", "reason"),
    ("cause", "cause"),
    ("next_run_at", "runs again at"),
    ("delay_ms", "after"),
    ("deadline_at", "deadline"),
    ("previous_owner", "previous owner"),
    ("worker", "worker"),
    ("resumes", "resumes as"),
    ("forward", "forward recovery"),
    ("from_version", "from version"),
    ("to_version", "to version"),
    ("skipped", "skips"),
    ("fork", "new run"),
    ("forked_from", "forked from"),
    ("from_step", "from step"),
    ("forced", "forced"),
    ("overrode", "overriding"),
    ("duration_ms", "took"),
    ("idempotency_key", "idempotency key"),
)
"""Detail keys shown as facts, in this order, with their labels (the rest stays hidden)."""


@dataclass(frozen=True)
class TimelineEntry:
    """One event, ready to show.

    Attributes:
        seq: Its number in the history.
        kind: The event kind (``data-event-kind``).
        label: What happened, in words.
        tone: Colour family.
        step: The step it concerns.
        attempt: The attempt it concerns.
        at: When.
        facts: (label, value) pairs: who, note, worker ids, retry time, …
        error: (type, message) of a failure, if any.
    """

    seq: int
    kind: str
    label: str
    tone: str
    step: str | None
    attempt: int | None
    at: datetime
    facts: list[tuple[str, Any]]
    error: tuple[str, str] | None


def timeline(events: Sequence[SagaEvent]) -> list[TimelineEntry]:
    """The entries of ``events``, newest first (what an operator reads first)."""
    return [_entry(event) for event in reversed(events)]


def _entry(event: SagaEvent) -> TimelineEntry:
    label, tone = _KINDS.get(event.kind, (str(event.kind), "neutral"))
    detail = event.detail
    facts = [(name, _fact(key, detail[key])) for key, name in _FACTS if key in detail]
    raw_error = detail.get("error")
    error = None
    if isinstance(raw_error, dict):
        error = (str(raw_error.get("type", "Error")), str(raw_error.get("message", "")))
    elif raw_error:
        error = ("Error", str(raw_error))
    return TimelineEntry(
        seq=event.seq,
        kind=event.kind.value,
        label=label,
        tone=tone,
        step=event.step,
        attempt=event.attempt,
        at=event.at,
        facts=facts,
        error=error,
    )


def _fact(key: str, value: Any) -> Any:
    if isinstance(value, list):  # steps skipped by a move, refusals a forced fork overrode
        return "; ".join(str(item) for item in value)
    if key in ("delay_ms", "duration_ms") and isinstance(value, int | float):
        return ("ms", float(value))
    if key in ("next_run_at", "deadline_at") and isinstance(value, str):
        try:
            return ("time", datetime.fromisoformat(value))
        except ValueError:
            return value
    return value
