"""Reconcile: find (and with ``fix``, remove) drift between ``applications`` and the store.

What it looks for, ignoring everything an active ``app_upload`` saga still owns:

* **orphan objects** — objects under ``apps/`` with no live record (the record is missing,
  FAILED or DELETED); fixed by deleting the object;
* **pending uploads** — unfinished multipart uploads (or partial files); fixed by aborting;
* **missing objects** — AVAILABLE records whose object is gone; fixed by marking the record
  FAILED (so it no longer points at nothing) and refreshing the package's latest version;
* **unfinished deletions** — DELETING records (a delete crashed midway); fixed by deleting the
  object and marking the record DELETED;
* **stalled uploads** — UPLOADING records whose saga is over or unknown; fixed like a
  compensation: object deleted, record FAILED;
* **size mismatches** — AVAILABLE records whose object has another size (reported only).

Every candidate is checked again right before it is fixed, so an upload or delete that moves
on while reconcile runs is left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select, update

from cloudphone.apps.catalog import get_txn, refresh_latest_txn
from cloudphone.apps.keys import PREFIX, ObjectKey
from cloudphone.apps.models import LIVE, Application, AppStatus, applications
from cloudphone.apps.storage.base import ObjectInfo, ObjectStorage, PendingUpload
from cloudphone.saga import Database, SagaEngine, SagaNotFoundError

log = logging.getLogger("cloudphone.apps.reconcile")


@dataclass
class ReconcileReport:
    """What reconcile found (and, with ``fixed``, repaired)."""

    orphan_objects: list[str] = field(default_factory=list)
    """Keys of objects without a live record."""
    pending_uploads: list[PendingUpload] = field(default_factory=list)
    """Unfinished uploads not owned by an active saga."""
    missing_objects: list[str] = field(default_factory=list)
    """Ids of AVAILABLE records whose object is gone."""
    unfinished_deletions: list[str] = field(default_factory=list)
    """Ids of DELETING records."""
    stalled_uploads: list[str] = field(default_factory=list)
    """Ids of UPLOADING records whose saga is over or unknown."""
    size_mismatches: list[str] = field(default_factory=list)
    """Ids of AVAILABLE records whose object has another size (not fixed automatically)."""
    fixed: bool = False
    """Whether the drift was repaired."""

    @property
    def clean(self) -> bool:
        """True when nothing drifted."""
        return not (
            self.orphan_objects
            or self.pending_uploads
            or self.missing_objects
            or self.unfinished_deletions
            or self.stalled_uploads
            or self.size_mismatches
        )


class Reconciler:
    """Compares the ``applications`` table with the object store.

    Args:
        db: The platform database.
        engine: The saga engine (to tell active uploads from finished ones).
        storage: The object store.
    """

    def __init__(self, db: Database, engine: SagaEngine, storage: ObjectStorage) -> None:
        self.db = db
        self.engine = engine
        self.storage = storage

    async def run(self, *, fix: bool = False, package_name: str | None = None) -> ReconcileReport:
        """Find drift; with ``fix``, repair it.

        Args:
            fix: Repair what was found (otherwise only report it).
            package_name: Look at this package only (its records and ``apps/<package>/``).
        """
        report = ReconcileReport(fixed=fix)
        prefix = PREFIX if package_name is None else f"{PREFIX}{package_name}/"
        objects = {o.key: o async for o in self.storage.list_objects(prefix)}
        query = select(applications)
        if package_name is not None:
            query = query.where(applications.c.package_name == package_name)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        records = [Application.from_row(row) for row in rows]
        live_keys = {r.object_key for r in records if r.status in LIVE}
        for key in sorted(set(objects) - live_keys):
            if await self._orphan(key):
                report.orphan_objects.append(key)
                if fix:
                    await self.storage.delete(key)
        async for upload in self.storage.list_pending_uploads(prefix):
            if await self._orphan_upload(upload):
                report.pending_uploads.append(upload)
                if fix:
                    await self.storage.abort_pending_upload(upload)
        for record in records:
            await self._check_record(record, objects.get(record.object_key), report, fix)
        log.info("apps reconcile done", extra={"fix": fix, "clean": report.clean})
        return report

    async def _check_record(
        self, record: Application, stored: ObjectInfo | None, report: ReconcileReport, fix: bool
    ) -> None:
        if record.status is AppStatus.AVAILABLE:
            if stored is None:
                report.missing_objects.append(record.id)
                if fix:
                    await self._fail_if_object_missing(record)
            elif stored.size != record.size:
                report.size_mismatches.append(record.id)
        elif record.status is AppStatus.DELETING:
            report.unfinished_deletions.append(record.id)
            if fix:
                await self.storage.delete(record.object_key)
                await self._move(record.id, AppStatus.DELETING, AppStatus.DELETED, None)
        elif record.status is AppStatus.UPLOADING and not await self._saga_active(record.saga_id):
            report.stalled_uploads.append(record.id)
            if fix and not await self._saga_active(record.saga_id):
                await self.storage.delete(record.object_key)
                reason = "upload stalled: its saga is over (reconcile)"
                await self._move(record.id, AppStatus.UPLOADING, AppStatus.FAILED, reason)

    async def _orphan(self, key: str) -> bool:
        """No live record holds ``key`` and no active saga will write one (checked now)."""
        parsed = ObjectKey.parse(key)
        if parsed is not None and await self._saga_active(parsed.saga_id):
            return False
        async with self.db.read() as conn:
            status = await conn.scalar(
                select(applications.c.status).where(applications.c.object_key == key)
            )
        return status is None or AppStatus(status) not in LIVE

    async def _orphan_upload(self, upload: PendingUpload) -> bool:
        parsed = ObjectKey.parse(upload.key)
        return parsed is None or not await self._saga_active(parsed.saga_id)

    async def _saga_active(self, saga_id: str) -> bool:
        try:
            return (await self.engine.get(saga_id)).status.is_active
        except SagaNotFoundError:
            return False

    async def _fail_if_object_missing(self, record: Application) -> None:
        if await self.storage.stat(record.object_key) is not None:
            return
        async with self.db.begin() as conn:
            current = await get_txn(conn, record.id, lock=True)
            if current is None or current.status is not AppStatus.AVAILABLE:
                return
            await conn.execute(
                update(applications)
                .where(applications.c.id == record.id)
                .values(
                    status=AppStatus.FAILED.value,
                    is_latest=False,
                    failure_reason="object missing from storage (reconcile)",
                    updated_at=datetime.now(UTC),
                )
            )
            await refresh_latest_txn(conn, record.package_name)

    async def _move(
        self, app_id: str, before: AppStatus, after: AppStatus, reason: str | None
    ) -> None:
        values: dict[str, object] = {"status": after.value, "updated_at": datetime.now(UTC)}
        if reason is not None:
            values["failure_reason"] = reason
        async with self.db.begin() as conn:
            await conn.execute(
                update(applications)
                .where(applications.c.id == app_id, applications.c.status == before.value)
                .values(**values)
            )
