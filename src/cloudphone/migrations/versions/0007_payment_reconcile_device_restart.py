"""Payment reconcile note; the RESTARTING device status.

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``payments.reconcile_note``."""
    op.add_column("payments", sa.Column("reconcile_note", sa.String(1000), nullable=True))


def downgrade() -> None:
    """Drop it (SQLite 3.35+ drops a column in place)."""
    op.drop_column("payments", "reconcile_note")
