"""Installs: the device_apps table (one row per application on a device).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies: a migration must not change when code moves.
TIMESTAMP = sa.DateTime(timezone=True)
STATUSES = "'INSTALLING', 'INSTALLED', 'UNINSTALLING'"


def upgrade() -> None:
    """Create ``device_apps`` and its index by saga."""
    op.create_table(
        "device_apps",
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("package_name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("app_id", sa.String(36), nullable=False),
        sa.Column("version_code", sa.BigInteger(), nullable=False),
        sa.Column("version_name", sa.String(255), nullable=True),
        sa.Column("saga_id", sa.String(36), nullable=False),
        sa.Column("previous_app_id", sa.String(36), nullable=True),
        sa.Column("previous_version_code", sa.BigInteger(), nullable=True),
        sa.Column("previous_version_name", sa.String(255), nullable=True),
        sa.Column("installed_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="ck_device_apps_status"),
        sa.CheckConstraint("version_code >= 0", name="ck_device_apps_version_code"),
        sa.PrimaryKeyConstraint("device_id", "package_name", name="pk_device_apps"),
    )
    op.create_index("ix_device_apps_saga_id", "device_apps", ["saga_id"], unique=False)


def downgrade() -> None:
    """Drop the table."""
    op.drop_index("ix_device_apps_saga_id", table_name="device_apps")
    op.drop_table("device_apps")
