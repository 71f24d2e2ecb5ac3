"""Queries over ``applications`` shared by the saga, the use cases and reconcile.

Functions ending in ``_txn`` run inside the caller's transaction and take its connection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Select, and_, false, or_, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.apps.models import LIVE, Application, AppStatus, applications
from cloudphone.domain import Principal

_LATEST_LOCK_NAMESPACE = b"cloudphone.apps.latest:"


async def find_live_version_txn(
    conn: AsyncConnection, package_name: str, version_code: int
) -> str | None:
    """Id of the live record holding (package, version code), if any."""
    result = await conn.scalar(
        select(applications.c.id).where(
            applications.c.package_name == package_name,
            applications.c.version_code == version_code,
            applications.c.status.in_([s.value for s in LIVE]),
        )
    )
    return None if result is None else str(result)


async def refresh_latest_txn(conn: AsyncConnection, package_name: str) -> str | None:
    """Make the highest AVAILABLE version code the package's only latest record.

    On PostgreSQL a transaction-scoped advisory lock per package serialises concurrent
    refreshes, so each one reads every record committed before it (SQLite has one writer).

    Returns:
        The id of the latest record, or None when the package has no AVAILABLE version.
    """
    if conn.dialect.name == "postgresql":
        lock = text("SELECT pg_advisory_xact_lock(:key)")
        await conn.execute(lock, {"key": _lock_key(package_name)})
    top = await conn.scalar(
        select(applications.c.id)
        .where(
            applications.c.package_name == package_name,
            applications.c.status == AppStatus.AVAILABLE.value,
        )
        .order_by(applications.c.version_code.desc())
        .limit(1)
    )
    now = datetime.now(UTC)
    unset = [applications.c.package_name == package_name, applications.c.is_latest == true()]
    if top is not None:
        unset.append(applications.c.id != top)
    await conn.execute(update(applications).where(*unset).values(is_latest=False, updated_at=now))
    if top is None:
        return None
    await conn.execute(
        update(applications)
        .where(applications.c.id == top, applications.c.is_latest == false())
        .values(is_latest=True, updated_at=now)
    )
    return str(top)


def _lock_key(package_name: str) -> int:
    """A signed 64-bit advisory lock key for the package."""
    digest = hashlib.sha256(_LATEST_LOCK_NAMESPACE + package_name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def get_txn(conn: AsyncConnection, app_id: str, *, lock: bool = False) -> Application | None:
    """The record ``app_id`` (row-locked on PostgreSQL with ``lock``), or None."""
    query = select(applications).where(applications.c.id == app_id)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).mappings().first()
    return None if row is None else Application.from_row(row)


async def find_by_saga_txn(conn: AsyncConnection, saga_id: str) -> Application | None:
    """The record an ``app_upload`` run created, if any."""
    row = (
        (await conn.execute(select(applications).where(applications.c.saga_id == saga_id)))
        .mappings()
        .first()
    )
    return None if row is None else Application.from_row(row)


def list_query(
    principal: Principal,
    *,
    package_name: str | None,
    latest_only: bool,
    statuses: Sequence[AppStatus] | None,
    limit: int,
    offset: int,
) -> Select[tuple[object, ...]]:
    """Records a principal may see, newest version first.

    Users see every AVAILABLE record and their own uploads (not DELETED ones); admins see all.
    """
    query = select(applications)
    if not principal.is_admin:
        query = query.where(
            or_(
                applications.c.status == AppStatus.AVAILABLE.value,
                and_(
                    applications.c.uploaded_by == principal.user_id,
                    applications.c.status != AppStatus.DELETED.value,
                ),
            )
        )
    if package_name is not None:
        query = query.where(applications.c.package_name == package_name)
    if latest_only:
        query = query.where(applications.c.is_latest == true())
    if statuses:
        query = query.where(applications.c.status.in_([s.value for s in statuses]))
    return (
        query.order_by(
            applications.c.package_name,
            applications.c.version_code.desc(),
            applications.c.created_at.desc(),
        )
        .limit(limit)
        .offset(offset)
    )


def can_see(principal: Principal, app: Application) -> bool:
    """Whether ``principal`` may know that ``app`` exists."""
    if principal.is_admin:
        return True
    if app.status is AppStatus.AVAILABLE:
        return True
    return app.uploaded_by == principal.user_id and app.status is not AppStatus.DELETED
