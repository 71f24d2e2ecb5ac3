"""The ``applications`` table and its read model.

One row per upload of an APK version. Invariants the database enforces as well as the code:

* at most one *live* record (UPLOADING, AVAILABLE or DELETING) per (package, version code), by
  a partial unique index — a FAILED or DELETED version may be uploaded again;
* an upload is private to its uploader (and admins) until an admin publishes it: the catalog
  is every AVAILABLE record with a ``published_at`` (who published it is ``published_by``; a
  check constraint keeps the two together);
* at most one latest record per package, by a partial unique index, and only a published
  AVAILABLE record can be the latest (check constraints): the latest is the catalog's newest
  version, which anyone may know. UPDATE_LATEST_VERSION, publish, unpublish, delete and
  reconcile keep it the highest published AVAILABLE version code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    text,
)

from cloudphone.saga import Database
from cloudphone.saga.store.tables import NAMING_CONVENTION
from cloudphone.saga.store.types import JSONType, UtcDateTime


class AppStatus(StrEnum):
    """Life of an application record."""

    UPLOADING = "UPLOADING"
    """CREATE_APP_RECORD inserted it; the object is being stored."""
    AVAILABLE = "AVAILABLE"
    """MARK_AVAILABLE: the object is stored and its size checked; it can be downloaded."""
    FAILED = "FAILED"
    """The upload saga was compensated (or timed out): its object was removed."""
    DELETING = "DELETING"
    """``delete_app`` hid it and is removing the object (reconcile finishes a crashed one)."""
    DELETED = "DELETED"
    """``delete_app`` removed the object; the record stays for the audit trail."""


APK_MEDIA_TYPE = "application/vnd.android.package-archive"
"""Content type of APK files."""

LIVE = (AppStatus.UPLOADING, AppStatus.AVAILABLE, AppStatus.DELETING)
"""Statuses that hold the (package, version code) slot and may have an object."""

_LIVE_SQL = "status IN (" + ", ".join(f"'{s.value}'" for s in LIVE) + ")"
CATALOG_SQL = "status = 'AVAILABLE' AND published_at IS NOT NULL"
"""The catalog, in SQL: published records that can be downloaded."""
_STATUS_SQL = "status IN (" + ", ".join(f"'{s.value}'" for s in AppStatus) + ")"

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Metadata of the apps tables (Alembic includes it)."""

applications = Table(
    "applications",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("package_name", String(255), nullable=False),
    Column("version_code", BigInteger, nullable=False),
    Column("version_name", String(255)),
    Column("label", String(500)),
    Column("min_sdk", Integer),
    Column("target_sdk", Integer),
    Column("permissions", JSONType, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("object_key", String(1024), nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    Column("is_latest", Boolean, nullable=False),
    Column("uploaded_by", String(200), nullable=False),
    Column("description", String(1000)),
    Column("saga_id", String(36), nullable=False, unique=True),
    Column("failure_reason", String(1000)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("published_at", UtcDateTime),
    Column("published_by", String(200)),
    CheckConstraint("version_code >= 0", name="version_code"),
    CheckConstraint("size >= 0", name="size"),
    CheckConstraint(_STATUS_SQL, name="status"),
    CheckConstraint("NOT is_latest OR status = 'AVAILABLE'", name="latest_is_available"),
    CheckConstraint("NOT is_latest OR published_at IS NOT NULL", name="latest_is_published"),
    CheckConstraint("(published_at IS NULL) = (published_by IS NULL)", name="publisher_named"),
)
Index("ix_applications_package_name", applications.c.package_name)
Index(
    "uq_applications_live_version",
    applications.c.package_name,
    applications.c.version_code,
    unique=True,
    postgresql_where=text(_LIVE_SQL),
    sqlite_where=text(_LIVE_SQL),
)
Index(
    "ix_applications_uploaded_by",
    applications.c.uploaded_by,
    applications.c.package_name,
    applications.c.version_code,
)
Index(
    "ix_applications_catalog",
    applications.c.package_name,
    applications.c.version_code,
    postgresql_where=text(CATALOG_SQL),
    sqlite_where=text(CATALOG_SQL),
)
Index(
    "uq_applications_latest",
    applications.c.package_name,
    unique=True,
    postgresql_where=text("is_latest"),
    sqlite_where=text("is_latest"),
)


@dataclass(frozen=True)
class Application:
    """An uploaded APK version and where its bytes are.

    Attributes:
        id: Record id (chosen before the saga starts, so the 202 can name it).
        package_name: Android package name.
        version_code: Android's 64-bit version code (``versionCodeMajor << 32 | versionCode``).
        version_name: Human version string, if the APK has one.
        label: Application label (resolved from resources), if any.
        min_sdk: Minimum SDK level declared, if any.
        target_sdk: Target SDK level declared, if any.
        permissions: Declared permissions, in manifest order.
        size: Bytes of the APK.
        sha256: Hex SHA-256 of the APK, computed while it streamed in.
        object_key: Key of the object in storage (derived from package, version and saga).
        status: Where the record stands.
        is_latest: The newest version of its package in the catalog (the highest published
            AVAILABLE version code).
        uploaded_by: User id of the uploader.
        description: Free text given with the upload.
        saga_id: The ``app_upload`` run that created it.
        failure_reason: Why the upload failed, when it did.
        created_at: When CREATE_APP_RECORD inserted it.
        updated_at: Last change.
        published_at: When an admin published it to the catalog (None while private).
        published_by: User id of the admin who published it.
    """

    id: str
    package_name: str
    version_code: int
    version_name: str | None
    label: str | None
    min_sdk: int | None
    target_sdk: int | None
    permissions: tuple[str, ...]
    size: int
    sha256: str
    object_key: str
    status: AppStatus
    is_latest: bool
    uploaded_by: str
    description: str | None
    saga_id: str
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    published_by: str | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Application:
        """Build from an ``applications`` row."""
        values = {name: row[name] for name in cls.__dataclass_fields__}
        values["status"] = AppStatus(row["status"])
        values["permissions"] = tuple(row["permissions"] or ())
        values["is_latest"] = bool(row["is_latest"])
        return cls(**values)

    @property
    def in_catalog(self) -> bool:
        """Published and AVAILABLE: everyone may read and download it."""
        return self.published_at is not None and self.status is AppStatus.AVAILABLE

    @property
    def download_name(self) -> str:
        """A file name for downloads: ``<package>-<version code>.apk``."""
        return f"{self.package_name}-{self.version_code}.apk"


async def create_apps_schema(db: Database) -> None:
    """Create the apps tables if missing (tests; production runs the Alembic migrations)."""
    async with db.begin() as conn:
        await conn.run_sync(metadata.create_all)
