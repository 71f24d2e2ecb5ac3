"""Devices tables: devices, device_quotas, quota_reservations, device_ports.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies: a migration must not change when code moves.
TIMESTAMP = sa.DateTime(timezone=True)
DEVICE_STATUSES = "'CREATING', 'RUNNING', 'STOPPED', 'ERROR', 'DELETING', 'DELETED'"
RESERVATION_STATUSES = "'HELD', 'CONSUMED', 'RELEASED', 'RETURNED'"
NOT_DELETED = "status != 'DELETED'"
DIMENSIONS = ("devices", "cpu_millis", "memory_mb", "storage_mb")


def _devices() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(200), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cpu_millis", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("storage_mb", sa.Integer(), nullable=False),
        sa.Column("resolution", sa.String(16), nullable=False),
        sa.Column("dpi", sa.Integer(), nullable=False),
        sa.Column("android_version", sa.String(16), nullable=False),
        sa.Column("runtime", sa.String(16), nullable=True),
        sa.Column("container_name", sa.String(128), nullable=True),
        sa.Column("container_id", sa.String(128), nullable=True),
        sa.Column("adb_host", sa.String(255), nullable=True),
        sa.Column("adb_port", sa.Integer(), nullable=True),
        sa.Column("stream_port", sa.Integer(), nullable=True),
        sa.Column("create_saga_id", sa.String(36), nullable=False),
        sa.Column("delete_saga_id", sa.String(36), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("deleted_at", TIMESTAMP, nullable=True),
        sa.CheckConstraint(f"status IN ({DEVICE_STATUSES})", name="ck_devices_status"),
        sa.CheckConstraint(
            "cpu_millis > 0 AND memory_mb > 0 AND storage_mb > 0", name="ck_devices_spec"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("create_saga_id", name="uq_devices_create_saga_id"),
        sa.UniqueConstraint(
            "owner_id", "idempotency_key", name="uq_devices_owner_id_idempotency_key"
        ),
    )
    op.create_index(
        "uq_devices_owner_live_name",
        "devices",
        ["owner_id", "name"],
        unique=True,
        postgresql_where=sa.text(NOT_DELETED),
        sqlite_where=sa.text(NOT_DELETED),
    )
    op.create_index("ix_devices_owner_created", "devices", ["owner_id", "created_at"])


def _quotas() -> None:
    counters = [
        sa.Column(f"{kind}_{d}", sa.Integer(), nullable=False)
        for kind in ("used", "reserved")
        for d in DIMENSIONS
    ]
    op.create_table(
        "device_quotas",
        sa.Column("user_id", sa.String(200), nullable=False),
        *(sa.Column(f"max_{d}", sa.Integer(), nullable=False) for d in DIMENSIONS),
        *(sa.Column(f"device_max_{d}", sa.Integer(), nullable=False) for d in DIMENSIONS[1:]),
        *counters,
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            " AND ".join(f"used_{d} >= 0" for d in DIMENSIONS), name="ck_device_quotas_used"
        ),
        sa.CheckConstraint(
            " AND ".join(f"reserved_{d} >= 0" for d in DIMENSIONS),
            name="ck_device_quotas_reserved",
        ),
        sa.PrimaryKeyConstraint("user_id", name="pk_device_quotas"),
    )
    op.create_table(
        "quota_reservations",
        sa.Column("saga_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("cpu_millis", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("storage_mb", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            f"status IN ({RESERVATION_STATUSES})", name="ck_quota_reservations_status"
        ),
        sa.PrimaryKeyConstraint("saga_id", name="pk_quota_reservations"),
    )
    op.create_index(
        "ix_quota_reservations_user_status", "quota_reservations", ["user_id", "status"]
    )


def _ports() -> None:
    op.create_table(
        "device_ports",
        sa.Column("port", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("saga_id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("allocated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("kind IN ('adb', 'stream')", name="ck_device_ports_kind"),
        sa.CheckConstraint("port BETWEEN 1 AND 65535", name="ck_device_ports_port"),
        sa.PrimaryKeyConstraint("port", name="pk_device_ports"),
    )
    op.create_index("ix_device_ports_saga_id", "device_ports", ["saga_id"])
    op.create_index("ix_device_ports_device_id", "device_ports", ["device_id"])


def upgrade() -> None:
    """Create the devices service's tables."""
    _devices()
    _quotas()
    _ports()


def downgrade() -> None:
    """Drop them (containers are left to the sweeper)."""
    for table in ("device_ports", "quota_reservations", "device_quotas", "devices"):
        op.drop_table(table)
