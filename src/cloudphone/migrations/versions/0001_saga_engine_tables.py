"""Saga engine tables: saga_runs (current state) and saga_events (history).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the engine's column types: a migration must not change when code moves.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
STATUSES = "'PENDING', 'RUNNING', 'COMPENSATING', 'COMPLETED', 'COMPENSATED', 'TIMED_OUT', 'FAILED'"
ACTIVE = "status IN ('PENDING', 'RUNNING', 'COMPENSATING')"


def upgrade() -> None:
    """Create saga_runs, its indexes, and saga_events."""
    op.create_table(
        "saga_runs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("saga_type", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("current_step", sa.String(100), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("error", JSON, nullable=True),
        sa.Column("compensation_cause", sa.String(16), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("started_by", sa.String(200), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", TIMESTAMP, nullable=True),
        sa.Column("next_run_at", TIMESTAMP, nullable=True),
        sa.Column("deadline_at", TIMESTAMP, nullable=True),
        sa.Column("deadline_noted", sa.Boolean(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="ck_saga_runs_status"),
        sa.CheckConstraint("attempt >= 1", name="ck_saga_runs_attempt"),
        sa.PrimaryKeyConstraint("id", name="pk_saga_runs"),
        sa.UniqueConstraint(
            "saga_type", "idempotency_key", name="uq_saga_runs_saga_type_idempotency_key"
        ),
    )
    op.create_index(
        "ix_saga_runs_due",
        "saga_runs",
        ["next_run_at"],
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )
    op.create_index("ix_saga_runs_owner", "saga_runs", ["owner"])
    op.create_index("ix_saga_runs_started_by", "saga_runs", ["started_by", "created_at"])
    op.create_index("ix_saga_runs_status_created", "saga_runs", ["status", "created_at"])
    op.create_index("ix_saga_runs_type_created", "saga_runs", ["saga_type", "created_at"])
    op.create_table(
        "saga_events",
        sa.Column("saga_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("step", sa.String(100), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["saga_id"],
            ["saga_runs.id"],
            name="fk_saga_events_saga_id_saga_runs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("saga_id", "seq", name="pk_saga_events"),
    )


def downgrade() -> None:
    """Drop the engine's tables (and every saga's history with them)."""
    op.drop_table("saga_events")
    op.drop_table("saga_runs")
