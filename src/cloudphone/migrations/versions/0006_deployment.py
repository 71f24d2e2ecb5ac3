"""The deployment id: cloudphone_deployment (one row, written on the platform's first start).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the table; the platform inserts the row when it first starts."""
    op.create_table(
        "cloudphone_deployment",
        sa.Column("singleton", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("deployment_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("singleton"),
    )


def downgrade() -> None:
    """Drop it (the stamps it issued stay; a new id would not match them)."""
    op.drop_table("cloudphone_deployment")
