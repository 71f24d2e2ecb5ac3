"""Taking an upload in: spool and check the APK, then start its ``app_upload`` saga.

:class:`UploadIntake` is the upload half of :class:`~cloudphone.apps.service.AppsService`
(its ``upload_app``): the body is spooled, hashed and size-limited while it streams in, parsed,
checked against the live records, and only then handed to a new run whose UPLOADING record is
inserted in the same transaction. A refused upload leaves nothing behind: no run, no record,
no spooled file.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from cloudphone.apps.catalog import find_by_saga_txn, find_live_version_txn, get_txn
from cloudphone.apps.config import AppsConfig
from cloudphone.apps.models import Application
from cloudphone.apps.spool import SpooledUpload, UploadSpool
from cloudphone.apps.upload import DuplicateVersionError, UploadInput, ensure_record_txn
from cloudphone.apps.validation import describe_upload
from cloudphone.domain import ConflictError, Principal
from cloudphone.saga import Database, SagaEngine

log = logging.getLogger("cloudphone.apps")

Description = str | Callable[[], str | None] | None
"""The upload's description, or a function giving it once the body has been read (a form
field may come after the file)."""


@dataclass(frozen=True)
class UploadAccepted:
    """The outcome of :meth:`~cloudphone.apps.service.AppsService.upload_app`.

    Attributes:
        saga_id: The ``app_upload`` run that stores the APK.
        application: The record (or, before the saga wrote it, what it will hold).
        created: False when an Idempotency-Key found an earlier upload.
    """

    saga_id: str
    application: Application
    created: bool


class UploadIntake:
    """Accepts uploads for :meth:`~cloudphone.apps.service.AppsService.upload_app`.

    Args:
        db: The platform database (shared with the engine).
        engine: The saga engine, knowing ``upload_saga``.
        spool: Where uploads wait for their saga.
        config: Limits (``max_upload_bytes``).
        upload_saga: Name of the upload saga type.
    """

    def __init__(
        self,
        db: Database,
        engine: SagaEngine,
        spool: UploadSpool,
        config: AppsConfig,
        upload_saga: str,
    ) -> None:
        self.db = db
        self.engine = engine
        self.spool = spool
        self.config = config
        self.upload_saga = upload_saga

    async def receive(
        self,
        principal: Principal,
        chunks: AsyncIterable[bytes],
        *,
        description: Description,
        idempotency_key: str | None,
    ) -> UploadAccepted:
        """Spool, check and start the upload (see ``AppsService.upload_app``)."""
        if idempotency_key is not None:
            earlier = await self._started_with(idempotency_key)
            if earlier is not None:
                return earlier
        spooled = await self.spool.receive(chunks, max_bytes=self.config.max_upload_bytes)
        try:
            upload = await self._accept(principal, spooled, description)
            accepted = await self._start(principal, upload, idempotency_key)
        except BaseException:
            spooled.discard()
            raise
        if not accepted.created:  # a concurrent request with this key won
            spooled.discard()
            return accepted
        spooled.release()
        log.info(
            "upload accepted",
            extra={
                "saga_id": accepted.saga_id,
                "package": upload.package_name,
                "size": upload.size,
            },
        )
        return accepted

    async def _start(
        self, principal: Principal, upload: UploadInput, idempotency_key: str | None
    ) -> UploadAccepted:
        """Start the run and insert its UPLOADING record in one transaction.

        The record exists as soon as the 202 names it, and the partial unique index turns a
        duplicate that raced past :meth:`_accept`'s check into a 409 here, before any byte
        reaches object storage.
        """
        try:
            async with self.db.begin() as conn:
                saga_id = await self.engine.start(
                    self.upload_saga,
                    upload,
                    idempotency_key=idempotency_key,
                    started_by=principal.user_id,
                    session=conn,
                )
                earlier = await find_by_saga_txn(conn, saga_id)
                if earlier is not None:  # the key's first request inserted run and record
                    return UploadAccepted(saga_id, earlier, created=False)
                await ensure_record_txn(conn, upload, saga_id)
                app = await get_txn(conn, upload.app_id)
        except (DuplicateVersionError, IntegrityError) as error:
            raise _duplicate(upload) from error
        assert app is not None
        return UploadAccepted(saga_id, app, created=True)

    async def _accept(
        self, principal: Principal, spooled: SpooledUpload, description: Description
    ) -> UploadInput:
        text = description() if callable(description) else description
        upload = await describe_upload(
            spooled, uploaded_by=principal.user_id, app_id=str(uuid.uuid4()), description=text
        )
        async with self.db.read() as conn:
            holder = await find_live_version_txn(conn, upload.package_name, upload.version_code)
        if holder is not None:
            raise _duplicate(upload)
        return upload

    async def _started_with(self, idempotency_key: str) -> UploadAccepted | None:
        run = await self.engine.find(self.upload_saga, idempotency_key)
        if run is None:
            return None
        async with self.db.read() as conn:
            app = await find_by_saga_txn(conn, run.id)
        if app is None:
            return None
        return UploadAccepted(run.id, app, created=False)


def _duplicate(upload: UploadInput) -> ConflictError:
    return ConflictError(
        f"{upload.package_name} version code {upload.version_code} already exists",
        code="duplicate_version",
    )
