"""The ``app_upload`` saga: a spooled APK becomes an AVAILABLE application record and an object.

``CREATE_APP_RECORD`` (UPLOADING; a live duplicate is refused — the service already inserts the
record in the transaction that starts the run, so the 202 can name it and a duplicate is a
synchronous 409; the step makes sure it exists) → ``UPLOAD_TO_STORAGE`` (key
derived from the run; replaces its own earlier attempts; checked by size) → ``MARK_AVAILABLE``
(the pivot) → ``UPDATE_LATEST_VERSION`` (exactly one latest per package: the highest published
AVAILABLE version code; a new upload is private, so it becomes the latest only once an admin
publishes it). Before the pivot a failure or the deadline compensates in reverse: the object
and any unfinished multipart upload are removed, then the record is marked FAILED and the
spooled file removed. So no object outlives its record's failure, and no AVAILABLE record
points at nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.apps.catalog import find_live_version_txn, refresh_latest_txn
from cloudphone.apps.keys import object_key
from cloudphone.apps.models import AppStatus, applications
from cloudphone.apps.spool import UploadSpool
from cloudphone.apps.storage.base import ObjectStorage, StorageError
from cloudphone.saga import NonRetryableError, RetryPolicy, Saga, StepContext, StepKind

log = logging.getLogger("cloudphone.apps.upload")

APP_UPLOAD = "app_upload"
"""Name of the upload saga type."""

STEPS = ("CREATE_APP_RECORD", "UPLOAD_TO_STORAGE", "MARK_AVAILABLE", "UPDATE_LATEST_VERSION")
"""The saga's steps, in order; MARK_AVAILABLE is the pivot."""


class DuplicateVersionError(NonRetryableError):
    """Another live record holds this package and version code (a concurrent upload won)."""


class SpoolFileMissingError(NonRetryableError):
    """The spooled APK is gone: the worker does not share the API's temp directory."""


@dataclass(frozen=True)
class UploadInput:
    """The saga's input (``ctx.input``): what the service learnt from the upload."""

    app_id: str
    package_name: str
    version_code: int
    version_name: str | None
    label: str | None
    min_sdk: int | None
    target_sdk: int | None
    permissions: list[str]
    size: int
    sha256: str
    spool_file: str
    uploaded_by: str
    description: str | None


def build_upload_saga(
    storage: ObjectStorage,
    spool: UploadSpool,
    *,
    timeout: timedelta = timedelta(minutes=10),
    store_timeout: timedelta = timedelta(minutes=5),
    retry: RetryPolicy | None = None,
    name: str = APP_UPLOAD,
) -> Saga[UploadInput]:
    """The ``app_upload`` saga over ``storage``, reading spooled files from ``spool``.

    Args:
        storage: Where the APK objects go.
        spool: Where the API spooled the uploads (shared with the API processes).
        timeout: Deadline of a run; past it, before MARK_AVAILABLE, the upload is undone.
        store_timeout: Longest one attempt of UPLOAD_TO_STORAGE may take.
        retry: Default retry policy of the steps (4 attempts, 1 s, x2, jitter if None).
        name: Saga type name (tests give each test its own).
    """
    saga = Saga(name, input=UploadInput, timeout=timeout, retry=retry)

    @saga.step("CREATE_APP_RECORD", transactional=True)
    async def create_record(ctx: StepContext[UploadInput]) -> dict[str, Any]:
        """The service inserts the record with the run; this makes sure it exists."""
        key = await ensure_record_txn(ctx.session, ctx.input, ctx.saga_id)
        return {"object_key": key}

    @create_record.compensate
    async def fail_record(ctx: StepContext[UploadInput]) -> None:
        reason = _failure_reason(ctx)
        await ctx.session.execute(
            update(applications)
            .where(
                applications.c.saga_id == ctx.saga_id,
                applications.c.status == AppStatus.UPLOADING.value,
            )
            .values(status=AppStatus.FAILED.value, failure_reason=reason, updated_at=_now())
        )
        spool.remove(ctx.input.spool_file)

    @saga.step("UPLOAD_TO_STORAGE", timeout=store_timeout)
    async def store(ctx: StepContext[UploadInput]) -> dict[str, Any]:
        upload = ctx.input
        path = spool.path(upload.spool_file)
        if not path.exists():
            raise SpoolFileMissingError(
                f"spooled upload {upload.spool_file} is missing: API and workers must share "
                f"the apps temp directory ({spool.directory})"
            )
        key = _key(ctx)
        await storage.put_file(key, path, size=upload.size)
        stored = await storage.stat(key)
        if stored is None or stored.size != upload.size:
            found = "nothing" if stored is None else f"{stored.size} bytes"
            raise StorageError(f"stored {key} holds {found}, expected {upload.size} bytes")
        return {"stored_at": _now().isoformat()}

    @store.compensate
    async def remove_object(ctx: StepContext[UploadInput]) -> None:
        await storage.delete(_key(ctx))

    @saga.step("MARK_AVAILABLE", transactional=True, kind=StepKind.PIVOT)
    async def mark_available(ctx: StepContext[UploadInput]) -> None:
        result = await ctx.session.execute(
            update(applications)
            .where(
                applications.c.saga_id == ctx.saga_id,
                applications.c.status == AppStatus.UPLOADING.value,
            )
            .values(status=AppStatus.AVAILABLE.value, updated_at=_now())
        )
        if result.rowcount != 1:
            raise NonRetryableError(f"no UPLOADING application record for saga {ctx.saga_id}")

    @saga.step("UPDATE_LATEST_VERSION", transactional=True)
    async def update_latest(ctx: StepContext[UploadInput]) -> dict[str, Any]:
        upload = ctx.input
        latest = await refresh_latest_txn(ctx.session, upload.package_name)
        spool.remove(upload.spool_file)  # the saga is over: the spooled copy is not needed
        return {"latest_app_id": latest}

    return saga


async def ensure_record_txn(conn: AsyncConnection, upload: UploadInput, saga_id: str) -> str:
    """Insert the UPLOADING record of run ``saga_id`` unless it exists; returns its object key.

    Raises:
        DuplicateVersionError: Another live record holds the package and version code.
    """
    key = object_key(upload.package_name, upload.version_code, saga_id)
    exists = await conn.scalar(select(applications.c.id).where(applications.c.saga_id == saga_id))
    if exists is not None:
        return key
    holder = await find_live_version_txn(conn, upload.package_name, upload.version_code)
    if holder is not None:
        raise DuplicateVersionError(
            f"{upload.package_name} version code {upload.version_code} already exists "
            f"(application {holder})"
        )
    await conn.execute(insert(applications).values(**_record(upload, key, saga_id)))
    return key


def _key(ctx: StepContext[UploadInput]) -> str:
    """The object key CREATE_APP_RECORD gave the run's record (derived from the run)."""
    key: str = ctx.output("CREATE_APP_RECORD")["object_key"]
    return key


def _record(upload: UploadInput, key: str, saga_id: str) -> dict[str, Any]:
    now = _now()
    return {
        "id": upload.app_id,
        "package_name": upload.package_name,
        "version_code": upload.version_code,
        "version_name": upload.version_name,
        "label": upload.label,
        "min_sdk": upload.min_sdk,
        "target_sdk": upload.target_sdk,
        "permissions": list(upload.permissions),
        "size": upload.size,
        "sha256": upload.sha256,
        "object_key": key,
        "status": AppStatus.UPLOADING.value,
        "is_latest": False,
        "uploaded_by": upload.uploaded_by,
        "description": upload.description,
        "saga_id": saga_id,
        "failure_reason": None,
        "created_at": now,
        "updated_at": now,
        "published_at": None,  # private to its uploader until an admin publishes it
        "published_by": None,
    }


def _failure_reason(ctx: StepContext[UploadInput]) -> str:
    """Why the run is compensating, from the engine's compensation context."""
    cause = ctx.compensation_cause or "failed"
    error = ctx.error
    if error is None or not error.message:
        return f"upload undone ({cause})"
    where = f" in {error.step}" if error.step else ""
    return f"{cause}{where}: {error.message}"[:1000]


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "APP_UPLOAD",
    "STEPS",
    "DuplicateVersionError",
    "SpoolFileMissingError",
    "UploadInput",
    "build_upload_saga",
    "ensure_record_txn",
]
