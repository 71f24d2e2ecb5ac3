"""SQLite statements of the hot path, built once with bind parameters.

Building a Core statement per call costs more than SQLite takes to run it, so these are
constructed at import and executed with parameters only (one compiled form each, cached).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Integer, and_, bindparam, case, func, not_, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cloudphone.saga.progress import Progress
from cloudphone.saga.store.tables import saga_runs
from cloudphone.saga.store.types import JSONType, UtcDateTime

_R = saga_runs.c

COMMIT = (
    update(saga_runs)
    .where(_R.id == bindparam("b_id"), _R.epoch == bindparam("b_epoch", type_=Integer))
    .values(
        status=bindparam("b_status"),
        current_step=bindparam("b_step"),
        attempt=bindparam("b_attempt", type_=Integer),
        # NULL keeps the data as it is (None is SQL NULL for this column type).
        data=func.coalesce(bindparam("b_data", type_=JSONType), _R.data),
        error=bindparam("b_error", type_=JSONType),
        compensation_cause=bindparam("b_cause"),
        owner=case((bindparam("b_keep", type_=Boolean), _R.owner), else_=None),
        lease_expires_at=bindparam("b_lease", type_=UtcDateTime),
        next_run_at=bindparam("b_next", type_=UtcDateTime),
        finished_at=bindparam("b_finished", type_=UtcDateTime),
        deadline_noted=bindparam("b_noted", type_=Boolean),
        cancel_requested=and_(_R.cancel_requested, not_(bindparam("b_clear", type_=Boolean))),
        last_seq=_R.last_seq + bindparam("b_n", type_=Integer),
        updated_at=bindparam("b_now", type_=UtcDateTime),
    )
    .returning(_R.last_seq, _R.cancel_requested)
)
"""Apply a Progress if the epoch is current; returns last_seq and cancel_requested."""

INSERT_RUN = (
    sqlite_insert(saga_runs)
    .values({c.name: bindparam(f"v_{c.name}", type_=c.type) for c in saga_runs.c})
    .on_conflict_do_nothing(index_elements=["saga_type", "idempotency_key"])
    .returning(_R.id)
)
"""Insert a run unless its (saga_type, idempotency_key) exists."""


def commit_params(
    run_id: str, epoch: int, progress: Progress, lease_until: datetime
) -> dict[str, Any]:
    """Parameters of COMMIT."""
    return {
        "b_id": run_id,
        "b_epoch": epoch,
        "b_status": progress.status.value,
        "b_step": progress.step,
        "b_attempt": progress.attempt,
        "b_data": progress.data,
        "b_error": progress.error.to_dict() if progress.error else None,
        "b_cause": progress.compensation_cause,
        "b_keep": progress.keep_lease,
        "b_lease": lease_until if progress.keep_lease else None,
        "b_next": progress.next_run_at,
        "b_finished": progress.now if progress.finished else None,
        "b_noted": progress.deadline_noted,
        "b_clear": progress.clear_cancel,
        "b_n": len(progress.events),
        "b_now": progress.now,
    }


def insert_params(values: dict[str, Any]) -> dict[str, Any]:
    """Parameters of INSERT_RUN from the new run's column values."""
    return {f"v_{name}": value for name, value in values.items()}
