"""The ``device_apps`` table: which application each device has, or is getting or losing.

One row per (device, package). An install reserves the row (INSTALLING, naming its saga and
what was installed before, so undoing an upgrade puts the earlier version back); the row is
INSTALLED once the device answered ``Success``; an uninstall marks it UNINSTALLING and removes
it. A row held by a run (INSTALLING or UNINSTALLING) refuses every other install or uninstall
of that package on that device until the run is over. Rows go with their device
(``device_delete``); deleting or unpublishing the application leaves them as they are: the
copy on the device is the user's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Row,
    String,
    Table,
)

from cloudphone.saga import Database
from cloudphone.saga.store.tables import NAMING_CONVENTION
from cloudphone.saga.store.types import UtcDateTime

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Metadata of the installs table (Alembic includes it)."""


class InstallStatus(StrEnum):
    """Where an installation stands."""

    INSTALLING = "INSTALLING"
    """RESERVE_INSTALLATION (or the request that started ``app_install``) holds the row."""
    INSTALLED = "INSTALLED"
    """RECORD_INSTALLED: the device answered ``Success`` for this version."""
    UNINSTALLING = "UNINSTALLING"
    """``app_uninstall`` is removing it; the row goes once the device no longer has it."""
    FAILED = "FAILED"
    """Never stored: how a listing shows a row whose run FAILED (or was resolved by hand)
    while holding it: what the device has is not known until an operator retries the run or
    another install or uninstall takes the row over."""


STORED = (InstallStatus.INSTALLING, InstallStatus.INSTALLED, InstallStatus.UNINSTALLING)
"""The statuses a row can have."""
HELD = frozenset({InstallStatus.INSTALLING, InstallStatus.UNINSTALLING})
"""Statuses in which a run holds the row."""

_STATUS_SQL = "status IN (" + ", ".join(f"'{s.value}'" for s in STORED) + ")"

device_apps = Table(
    "device_apps",
    metadata,
    Column("device_id", String(36), nullable=False),
    Column("package_name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("app_id", String(36), nullable=False),
    Column("version_code", BigInteger, nullable=False),
    Column("version_name", String(255)),
    Column("saga_id", String(36), nullable=False),
    Column("previous_app_id", String(36)),
    Column("previous_version_code", BigInteger),
    Column("previous_version_name", String(255)),
    Column("installed_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("device_id", "package_name"),
    CheckConstraint(_STATUS_SQL, name="status"),
    CheckConstraint("version_code >= 0", name="version_code"),
)
Index("ix_device_apps_saga_id", device_apps.c.saga_id)


@dataclass(frozen=True)
class Installation:
    """One application on one device.

    Attributes:
        device_id: The device.
        package_name: Android package name.
        status: Where it stands (FAILED only in listings, see :class:`InstallStatus`).
        app_id: The application record installed, or being installed.
        version_code: Its version code.
        version_name: Its version name.
        saga_id: The run that holds the row, or last moved it.
        previous_app_id: While an upgrade runs: the application it replaces.
        previous_version_code: While an upgrade runs: the version it replaces.
        previous_version_name: While an upgrade runs: that version's name.
        installed_at: When the device last answered ``Success`` for it.
        created_at: When the row was first reserved.
        updated_at: Last change.
    """

    device_id: str
    package_name: str
    status: InstallStatus
    app_id: str
    version_code: int
    version_name: str | None
    saga_id: str
    previous_app_id: str | None
    previous_version_code: int | None
    previous_version_name: str | None
    installed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> Installation:
        """Build from a ``device_apps`` row."""
        m = row._mapping
        values = {f: m[f] for f in cls.__dataclass_fields__ if f != "status"}
        return cls(status=InstallStatus(m["status"]), **values)


async def create_installs_schema(db: Database) -> None:
    """Create the installs table if missing (tests; production runs the Alembic migrations)."""
    async with db.begin() as conn:
        await conn.run_sync(metadata.create_all)
