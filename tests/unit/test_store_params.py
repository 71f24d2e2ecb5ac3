"""The SQLite and PostgreSQL progress writes take their columns from one place."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from cloudphone.saga.progress import NewEvent, Progress, carrying
from cloudphone.saga.records import ErrorInfo, EventKind
from cloudphone.saga.state import SagaStatus
from cloudphone.saga.store import lite, pg_sql
from cloudphone.saga.store.rows import progress_values

NOW = datetime(2030, 1, 1, tzinfo=UTC)
PROGRESS = Progress(
    status=SagaStatus.RUNNING, step_index=1, step="B", attempt=2, output_step="A",
    output={"k": 1}, error=ErrorInfo("E", "m", "A"), compensation_cause=None, keep_lease=True,
    next_run_at=NOW, finished=False, deadline_noted=False, clear_cancel=False, events=(),
    now=NOW, retry_since=NOW,
)  # fmt: skip
CARRYING = carrying(
    replace(PROGRESS, events=(NewEvent(EventKind.STEP_SUCCEEDED, NOW, "A", 2),)),
    replace(PROGRESS, output_step="P", output=None,
            events=(NewEvent(EventKind.STEP_SUCCEEDED, NOW, "P", 1),)),
)  # fmt: skip


def test_sqlite_statement_binds_every_progress_column() -> None:
    columns = set(progress_values(PROGRESS, NOW))
    assert set(lite._PROGRESS_COLUMNS) == columns
    params = lite.commit_params("r", 1, PROGRESS, NOW)
    bound = {k.removeprefix("c_") for k in params if k.startswith("c_")}
    assert bound == columns | {"output_step", "output", "carried_step", "carried"}
    assert (params["c_output_step"], params["c_output"]) == ("A", {"k": 1})
    assert (params["c_carried_step"], params["c_carried"]) == (None, None)
    carried = lite.commit_params("r", 1, CARRYING, NOW)
    assert (carried["c_carried_step"], carried["c_carried"]) == ("P", None)


def test_postgres_item_carries_every_progress_column_as_json() -> None:
    item = pg_sql.progress_item("r", 1, PROGRESS, NOW)
    for name, value in progress_values(PROGRESS, NOW).items():
        assert item[name] == (value.isoformat() if isinstance(value, datetime) else value)
    assert item["outputs"] == {"A": {"k": 1}}
    assert pg_sql.progress_item("r", 1, CARRYING, NOW)["outputs"] == {"P": None, "A": {"k": 1}}


def test_a_carried_plain_steps_success_comes_first() -> None:
    """Its output is stored beside the step's own, its events before the step's own."""
    assert CARRYING.outputs_patch() == {"P": None, "A": {"k": 1}}
    assert [e.step for e in CARRYING.events] == ["P", "A"]
    assert replace(PROGRESS, output_step=None).outputs_patch() is None
