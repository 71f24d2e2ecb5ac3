"""Apps tables: applications (uploaded APK versions and where their objects are).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types: a migration must not change when code moves.
JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
STATUSES = "'UPLOADING', 'AVAILABLE', 'FAILED', 'DELETING', 'DELETED'"
LIVE = "status IN ('UPLOADING', 'AVAILABLE', 'DELETING')"


def upgrade() -> None:
    """Create applications with its constraints and partial unique indexes."""
    op.create_table(
        "applications",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("package_name", sa.String(255), nullable=False),
        sa.Column("version_code", sa.BigInteger(), nullable=False),
        sa.Column("version_name", sa.String(255), nullable=True),
        sa.Column("label", sa.String(500), nullable=True),
        sa.Column("min_sdk", sa.Integer(), nullable=True),
        sa.Column("target_sdk", sa.Integer(), nullable=True),
        sa.Column("permissions", JSON, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("object_key", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("is_latest", sa.Boolean(), nullable=False),
        sa.Column("uploaded_by", sa.String(200), nullable=False),
        sa.Column("description", sa.String(1000), nullable=True),
        sa.Column("saga_id", sa.String(36), nullable=False),
        sa.Column("failure_reason", sa.String(1000), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("version_code >= 0", name="ck_applications_version_code"),
        sa.CheckConstraint("size >= 0", name="ck_applications_size"),
        sa.CheckConstraint(f"status IN ({STATUSES})", name="ck_applications_status"),
        sa.CheckConstraint(
            "NOT is_latest OR status = 'AVAILABLE'", name="ck_applications_latest_is_available"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_applications"),
        sa.UniqueConstraint("object_key", name="uq_applications_object_key"),
        sa.UniqueConstraint("saga_id", name="uq_applications_saga_id"),
    )
    op.create_index("ix_applications_package_name", "applications", ["package_name"])
    op.create_index(
        "uq_applications_live_version",
        "applications",
        ["package_name", "version_code"],
        unique=True,
        postgresql_where=sa.text(LIVE),
        sqlite_where=sa.text(LIVE),
    )
    op.create_index(
        "uq_applications_latest",
        "applications",
        ["package_name"],
        unique=True,
        postgresql_where=sa.text("is_latest"),
        sqlite_where=sa.text("is_latest"),
    )


def downgrade() -> None:
    """Drop applications (the objects in storage are left alone)."""
    op.drop_table("applications")
