"""Saga versions and forks: saga_runs.saga_version and forked_from, and the saga_workers table.

Existing runs become version 1 (every definition was, before versions). ``saga_workers`` lists
the live workers with the (type, version) pairs they drive, so runs no live worker knows show.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies: a migration must not change when code moves.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add the two columns (existing runs: version 1, no fork), the index and the table."""
    with op.batch_alter_table("saga_runs") as batch:
        batch.add_column(
            sa.Column("saga_version", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch.add_column(sa.Column("forked_from", sa.String(length=36), nullable=True))
    op.create_index("ix_saga_runs_forked_from", "saga_runs", ["forked_from"], unique=False)
    op.create_table(
        "saga_workers",
        sa.Column("worker_id", sa.String(length=200), nullable=False),
        sa.Column("sagas", JSON, nullable=False),
        sa.Column("started_at", UTC_TIME, nullable=False),
        sa.Column("heartbeat_at", UTC_TIME, nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name="pk_saga_workers"),
    )


def downgrade() -> None:
    """Drop the table, the index and the columns."""
    op.drop_table("saga_workers")
    op.drop_index("ix_saga_runs_forked_from", table_name="saga_runs")
    with op.batch_alter_table("saga_runs") as batch:
        batch.drop_column("forked_from")
        batch.drop_column("saga_version")
