"""Payment reconcile note; the RESTARTING device status.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies: a migration must not change when code moves.
OLD_DEVICE_STATUSES = "'CREATING', 'RUNNING', 'STOPPED', 'ERROR', 'DELETING', 'DELETED'"
NEW_DEVICE_STATUSES = (
    "'CREATING', 'RUNNING', 'RESTARTING', 'STOPPED', 'ERROR', 'DELETING', 'DELETED'"
)


def _device_statuses(statuses: str) -> None:
    # SQLite cannot alter a CHECK constraint: batch mode rebuilds the table (indexes included).
    with op.batch_alter_table("devices") as batch:
        batch.drop_constraint("ck_devices_status", type_="check")
        batch.create_check_constraint("ck_devices_status", f"status IN ({statuses})")


def upgrade() -> None:
    """Add ``payments.reconcile_note``; allow the RESTARTING device status."""
    op.add_column("payments", sa.Column("reconcile_note", sa.String(1000), nullable=True))
    _device_statuses(NEW_DEVICE_STATUSES)


def downgrade() -> None:
    """Drop the note; devices being restarted count as RUNNING again (SQLite 3.35+)."""
    op.execute("UPDATE devices SET status = 'RUNNING' WHERE status = 'RESTARTING'")
    _device_statuses(OLD_DEVICE_STATUSES)
    op.drop_column("payments", "reconcile_note")
