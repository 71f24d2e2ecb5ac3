"""Read models of the engine's aggregates: counts, activity per minute, durations per type.

:meth:`SagaEngine.stats <cloudphone.saga.SagaEngine.stats>` fills them with a handful of
grouped queries that each read an index range (see ``bench/README.md``), never every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cloudphone.saga.state import SagaStatus


@dataclass(frozen=True)
class StatusCount:
    """How many runs of one type are in one status.

    Attributes:
        saga_type: The saga type.
        status: The status.
        count: Runs of that type in that status.
    """

    saga_type: str
    status: SagaStatus
    count: int


@dataclass(frozen=True)
class MinuteActivity:
    """What happened in one minute.

    Attributes:
        minute: Start of the minute (UTC).
        started: Runs created in it.
        finished: Runs that ended in it (FAILED included).
        not_completed: Of those, the ones that ended other than COMPLETED (compensated, timed
            out or FAILED).
    """

    minute: datetime
    started: int
    finished: int
    not_completed: int

    @property
    def failure_rate(self) -> float | None:
        """``not_completed / finished``, or None when nothing finished."""
        return self.not_completed / self.finished if self.finished else None


@dataclass(frozen=True)
class TypeDurations:
    """Start-to-end durations of one type's finished runs (nearest-rank percentiles).

    Attributes:
        saga_type: The saga type.
        count: Finished runs measured.
        p50_ms: Median duration, in milliseconds.
        p95_ms: 95th percentile, in milliseconds.
    """

    saga_type: str
    count: int
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True)
class SagaStats:
    """The aggregates an operator's overview shows.

    Attributes:
        since: Counts cover runs created at or after this time; None means every run.
        counts: Runs per type and status (only non-zero pairs).
        needs_attention: FAILED runs no operator has resolved (whatever their age).
        minutes: Activity of each minute of the recent window, oldest first, zeros included.
        durations: Durations per type of the runs that finished in the per-minute window.
    """

    since: datetime | None
    counts: list[StatusCount]
    needs_attention: int
    minutes: list[MinuteActivity]
    durations: list[TypeDurations]

    def count(self, status: SagaStatus | str, saga_type: str | None = None) -> int:
        """Runs in ``status`` (of ``saga_type``, or of every type)."""
        return sum(
            c.count
            for c in self.counts
            if c.status == status and (saga_type is None or c.saga_type == saga_type)
        )
