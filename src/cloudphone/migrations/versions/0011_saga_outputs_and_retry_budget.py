"""saga_runs.outputs (each step's output under its step) and saga_runs.retry_since.

``data`` becomes the run's input only: each progress write merges the step it records into
``outputs``. Existing runs keep their merged data in ``data`` and get ``{}`` outputs, which
gives the same merged view (the engine treats them as started before outputs were kept).
``retry_since`` is when the current step first failed: the start of its retry budget.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies: a migration must not change when code moves.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add both columns; every existing run gets empty outputs and no retry start."""
    op.add_column(
        "saga_runs", sa.Column("outputs", JSON, nullable=False, server_default=sa.text("'{}'"))
    )
    op.add_column("saga_runs", sa.Column("retry_since", TIMESTAMP, nullable=True))


def downgrade() -> None:
    """Fold the outputs back into ``data`` (the merged data it held before), then drop both."""
    runs = sa.table(
        "saga_runs", sa.column("id"), sa.column("data", JSON), sa.column("outputs", JSON)
    )
    bind = op.get_bind()
    query = sa.select(runs.c.id, runs.c.data, runs.c.outputs).where(sa.text("outputs <> '{}'"))
    for run_id, data, outputs in bind.execute(query).all():
        merged = dict(data)
        for output in outputs.values():
            merged.update(output or {})
        bind.execute(sa.update(runs).where(runs.c.id == run_id).values(data=merged))
    op.drop_column("saga_runs", "retry_since")
    op.drop_column("saga_runs", "outputs")
