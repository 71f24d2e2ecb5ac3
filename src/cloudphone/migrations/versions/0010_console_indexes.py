"""Console indexes on saga_runs: lists by time alone, and the overview's aggregates.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINISHED = "finished_at IS NOT NULL"


def upgrade() -> None:
    """Add ``ix_saga_runs_created`` and the partial ``ix_saga_runs_finished``."""
    op.create_index(
        "ix_saga_runs_created", "saga_runs", ["created_at", "saga_type", "status"], unique=False
    )
    op.create_index(
        "ix_saga_runs_finished",
        "saga_runs",
        ["finished_at", "saga_type", "status", "created_at"],
        unique=False,
        postgresql_where=sa.text(FINISHED),
        sqlite_where=sa.text(FINISHED),
    )


def downgrade() -> None:
    """Drop both indexes."""
    op.drop_index("ix_saga_runs_finished", table_name="saga_runs")
    op.drop_index("ix_saga_runs_created", table_name="saga_runs")
