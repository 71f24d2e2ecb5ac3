"""Queries over ``applications`` shared by the saga, the use cases and reconcile.

Functions ending in ``_txn`` run inside the caller's transaction and take its connection.
The catalog's latest version (``is_latest``) is kept by :func:`refresh_latest_txn`, which
every change of a record's status or publication calls in the same transaction.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy import false, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.apps.models import LIVE, Application, AppStatus, applications
from cloudphone.domain import ConflictError, NotFoundError

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
    """Make the highest published AVAILABLE version code the package's only latest record.

    On PostgreSQL a transaction-scoped advisory lock per package serialises concurrent
    refreshes, so each one reads every record committed before it (SQLite has one writer).

    Returns:
        The id of the latest record, or None when the package has nothing in the catalog.
    """
    if conn.dialect.name == "postgresql":
        lock = text("SELECT pg_advisory_xact_lock(:key)")
        await conn.execute(lock, {"key": _lock_key(package_name)})
    top = await conn.scalar(
        select(applications.c.id)
        .where(
            applications.c.package_name == package_name,
            applications.c.status == AppStatus.AVAILABLE.value,
            applications.c.published_at.is_not(None),
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


async def set_published_txn(
    conn: AsyncConnection, app_id: str, publisher: str | None
) -> tuple[Application, bool]:
    """Publish ``app_id`` as ``publisher`` (None: unpublish it), under its row lock.

    Publishing a published record, or unpublishing one that is not, changes nothing (the
    first publication stays). Unpublishing forgets who published it; the log keeps it.

    Returns:
        The record as it is now, and whether it changed.

    Raises:
        NotFoundError: No such record.
        ConflictError: Publishing a record that is not AVAILABLE (``not_available``).
    """
    app = await get_txn(conn, app_id, lock=True)
    if app is None:
        raise NotFoundError(f"no application {app_id!r}")
    if publisher is not None and app.status is not AppStatus.AVAILABLE:
        raise ConflictError(
            f"application {app_id} is {app.status}: only an AVAILABLE application can be published",
            code="not_available",
        )
    if (app.published_at is not None) is (publisher is not None):
        return app, False
    now = datetime.now(UTC)
    values: dict[str, object] = {"published_at": now, "published_by": publisher, "updated_at": now}
    if publisher is None:  # only a published record may be the latest
        values.update(published_at=None, is_latest=False)
    await conn.execute(update(applications).where(applications.c.id == app_id).values(**values))
    await refresh_latest_txn(conn, app.package_name)
    changed = await get_txn(conn, app_id)
    assert changed is not None  # we hold its lock
    return changed, True
