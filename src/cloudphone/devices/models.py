"""The devices service's tables: devices, quotas, quota reservations and allocated ports.

Same schema on SQLite and PostgreSQL (SQLAlchemy Core). Amounts of CPU are stored in
millicores so sums and comparisons are exact integers.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from cloudphone.saga.store.tables import NAMING_CONVENTION
from cloudphone.saga.store.types import UtcDateTime

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Metadata of the devices tables (Alembic includes it)."""


class DeviceStatus(StrEnum):
    """Life cycle of a device."""

    CREATING = "CREATING"
    """``POST /devices`` accepted it; its ``device_create`` saga is running."""
    RUNNING = "RUNNING"
    """ACTIVATE succeeded (or ``start`` brought a stopped device back, or a restart did)."""
    RESTARTING = "RESTARTING"
    """The device watch found its process or container gone and a worker is starting it
    again: RUNNING once it answers, else STOPPED with ``error`` saying why."""
    STOPPED = "STOPPED"
    """``stop`` stopped its container, or a restart failed (``error`` says why); it still
    holds its quota and ports, and ``start`` runs it again."""
    ERROR = "ERROR"
    """Its creation was compensated (``error`` says why); holds nothing but its name."""
    DELETING = "DELETING"
    """``DELETE /devices/{id}`` accepted; its ``device_delete`` saga is running."""
    DELETED = "DELETED"
    """MARK_DELETED: container gone, ports and quota released. Terminal."""


class ReservationStatus(StrEnum):
    """Life cycle of one ``device_create`` saga's quota reservation."""

    HELD = "HELD"
    """RESERVE_QUOTA: counted in the quota's ``reserved_*`` columns."""
    CONSUMED = "CONSUMED"
    """ACTIVATE: moved from ``reserved_*`` to ``used_*``; the device holds it."""
    RELEASED = "RELEASED"
    """RESERVE_QUOTA's compensation gave a HELD reservation back."""
    RETURNED = "RETURNED"
    """The device's RELEASE_QUOTA gave a CONSUMED reservation back."""


class PortKind(StrEnum):
    """What an allocated port is for."""

    ADB = "adb"
    STREAM = "stream"


def _in(column: str, enum: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(m.value) for m in enum)})"


devices = Table(
    "devices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("owner_id", String(200), nullable=False),
    Column("name", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    Column("cpu_millis", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("storage_mb", Integer, nullable=False),
    Column("resolution", String(16), nullable=False),
    Column("dpi", Integer, nullable=False),
    Column("android_version", String(16), nullable=False),
    Column("runtime", String(16)),
    Column("container_name", String(128)),
    Column("container_id", String(128)),
    Column("adb_host", String(255)),
    Column("adb_port", Integer),
    Column("stream_port", Integer),
    Column("create_saga_id", String(36), nullable=False),
    Column("delete_saga_id", String(36)),
    Column("idempotency_key", String(255)),
    Column("error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("deleted_at", UtcDateTime),
    UniqueConstraint("create_saga_id"),
    UniqueConstraint("owner_id", "idempotency_key"),
    CheckConstraint(_in("status", DeviceStatus), name="status"),
    CheckConstraint("cpu_millis > 0 AND memory_mb > 0 AND storage_mb > 0", name="spec"),
)

# A name is taken until its device is DELETED; deleted devices keep their row for audit.
Index(
    "uq_devices_owner_live_name",
    devices.c.owner_id,
    devices.c.name,
    unique=True,
    postgresql_where=devices.c.status != DeviceStatus.DELETED.value,
    sqlite_where=devices.c.status != DeviceStatus.DELETED.value,
)
Index("ix_devices_owner_created", devices.c.owner_id, devices.c.created_at)

device_quotas = Table(
    "device_quotas",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("max_devices", Integer, nullable=False),
    Column("max_cpu_millis", Integer, nullable=False),
    Column("max_memory_mb", Integer, nullable=False),
    Column("max_storage_mb", Integer, nullable=False),
    Column("device_max_cpu_millis", Integer, nullable=False),
    Column("device_max_memory_mb", Integer, nullable=False),
    Column("device_max_storage_mb", Integer, nullable=False),
    Column("used_devices", Integer, nullable=False),
    Column("used_cpu_millis", Integer, nullable=False),
    Column("used_memory_mb", Integer, nullable=False),
    Column("used_storage_mb", Integer, nullable=False),
    Column("reserved_devices", Integer, nullable=False),
    Column("reserved_cpu_millis", Integer, nullable=False),
    Column("reserved_memory_mb", Integer, nullable=False),
    Column("reserved_storage_mb", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint(
        "used_devices >= 0 AND used_cpu_millis >= 0 AND used_memory_mb >= 0 "
        "AND used_storage_mb >= 0",
        name="used",
    ),
    CheckConstraint(
        "reserved_devices >= 0 AND reserved_cpu_millis >= 0 AND reserved_memory_mb >= 0 "
        "AND reserved_storage_mb >= 0",
        name="reserved",
    ),
)

quota_reservations = Table(
    "quota_reservations",
    metadata,
    # One reservation per device_create saga, so its compensation releases exactly this one.
    Column("saga_id", String(36), primary_key=True),
    Column("user_id", String(200), nullable=False),
    Column("device_id", String(36), nullable=False),
    Column("cpu_millis", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("storage_mb", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint(_in("status", ReservationStatus), name="status"),
)
Index(
    "ix_quota_reservations_user_status", quota_reservations.c.user_id, quota_reservations.c.status
)

device_ports = Table(
    "device_ports",
    metadata,
    # The primary key makes a port unique across the platform; a lost race retries.
    Column("port", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("saga_id", String(36), nullable=False),
    Column("device_id", String(36), nullable=False),
    Column("allocated_at", UtcDateTime, nullable=False),
    CheckConstraint(_in("kind", PortKind), name="kind"),
    CheckConstraint("port BETWEEN 1 AND 65535", name="port"),
)
Index("ix_device_ports_saga_id", device_ports.c.saga_id)
Index("ix_device_ports_device_id", device_ports.c.device_id)
