"""The SQLite and PostgreSQL progress writes take their columns from one place."""

from __future__ import annotations

from datetime import UTC, datetime

from cloudphone.saga.progress import Progress
from cloudphone.saga.records import ErrorInfo
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


def test_sqlite_statement_binds_every_progress_column() -> None:
    columns = set(progress_values(PROGRESS, NOW))
    assert set(lite._PROGRESS_COLUMNS) == columns
    params = lite.commit_params("r", 1, PROGRESS, NOW)
    bound = {k.removeprefix("c_") for k in params if k.startswith("c_")}
    assert bound == columns | {"output_step", "output"}
    assert (params["c_output_step"], params["c_output"]) == ("A", {"k": 1})


def test_postgres_item_carries_every_progress_column_as_json() -> None:
    item = pg_sql.progress_item("r", 1, PROGRESS, NOW)
    for name, value in progress_values(PROGRESS, NOW).items():
        assert item[name] == (value.isoformat() if isinstance(value, datetime) else value)
    assert (item["output_step"], item["output"]) == ("A", {"k": 1})
