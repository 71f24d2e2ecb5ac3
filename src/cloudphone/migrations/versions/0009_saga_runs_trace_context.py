"""saga_runs.trace_context: the W3C trace context of a run's start.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy: a migration must not change when code moves.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    """Add the nullable column (existing runs have no trace context)."""
    op.add_column("saga_runs", sa.Column("trace_context", JSON, nullable=True))


def downgrade() -> None:
    """Drop it (SQLite 3.35+ drops a column in place)."""
    op.drop_column("saga_runs", "trace_context")
