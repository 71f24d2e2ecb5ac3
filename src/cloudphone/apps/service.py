"""Use cases of the apps service: upload, list, get, download, publish and delete applications.

Plain async functions over the database, the saga engine, the object store and the upload
spool; they take a :class:`~cloudphone.domain.Principal` and raise domain errors. Nothing here
knows about HTTP: an upload is any async iterator of byte chunks. Who may see and delete what
is :mod:`cloudphone.apps.access`: an upload is private to its uploader (and admins) until an
admin publishes it to the catalog; how an upload is taken in is :mod:`cloudphone.apps.intake`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Sequence
from datetime import UTC, datetime

from sqlalchemy import select, update

from cloudphone.apps.access import AppScope, can_see, deletable, list_query
from cloudphone.apps.catalog import get_txn, refresh_latest_txn, set_published_txn
from cloudphone.apps.config import AppsConfig
from cloudphone.apps.intake import Description, UploadAccepted, UploadIntake
from cloudphone.apps.models import Application, AppStatus, applications
from cloudphone.apps.reconcile import Reconciler, ReconcileReport
from cloudphone.apps.spool import UploadSpool
from cloudphone.apps.storage.base import (
    Download,
    ObjectStorage,
    StorageError,
    StorageUnavailableError,
)
from cloudphone.apps.upload import APP_UPLOAD
from cloudphone.domain import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    Principal,
    UnavailableError,
)
from cloudphone.periodic import Periodic
from cloudphone.saga import Database, SagaEngine, SagaNotFoundError
from cloudphone.saga.state import ACTIVE
from cloudphone.saga.store.tables import saga_runs

__all__ = ["AppsService", "Description", "UploadAccepted"]

log = logging.getLogger("cloudphone.apps")


class AppsService:
    """The apps use cases.

    Args:
        db: The platform database (shared with the engine).
        engine: The saga engine, knowing ``app_upload``.
        storage: Where APK objects live.
        spool: Where uploads wait for their saga.
        config: Limits and timeouts.
        upload_saga: Name of the upload saga type (tests give each test its own).
    """

    def __init__(
        self,
        db: Database,
        engine: SagaEngine,
        storage: ObjectStorage,
        spool: UploadSpool,
        config: AppsConfig,
        *,
        upload_saga: str = APP_UPLOAD,
    ) -> None:
        self.db = db
        self.upload_saga = upload_saga
        self.engine = engine
        self.storage = storage
        self.spool = spool
        self.config = config
        self._intake = UploadIntake(db, engine, spool, config, upload_saga)
        self._sweeping = Periodic(
            "apps-spool-sweep", self.sweep_spool, config.temp_sweep_interval, delay_first=True
        )

    # -- upload -------------------------------------------------------------------------

    async def upload_app(
        self,
        principal: Principal,
        chunks: AsyncIterable[bytes],
        *,
        description: Description = None,
        idempotency_key: str | None = None,
    ) -> UploadAccepted:
        """Spool, hash, size-limit and parse an APK, then start its ``app_upload`` saga.

        Nothing reaches object storage before the saga's CREATE_APP_RECORD has committed,
        and nothing at all when the upload is refused.

        Raises:
            PayloadTooLargeError: The body is larger than ``max_upload_bytes``.
            InvalidInputError: Not an APK, a corrupt zip, a missing or broken manifest.
            ConflictError: A live record already holds this package and version code.
        """
        return await self._intake.receive(
            principal, chunks, description=description, idempotency_key=idempotency_key
        )

    # -- reading ------------------------------------------------------------------------

    async def list_apps(
        self,
        principal: Principal,
        *,
        scope: AppScope | None = None,
        package_name: str | None = None,
        latest_only: bool = False,
        statuses: Sequence[AppStatus] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Application]:
        """Applications of ``scope`` the caller may see, by package then newest version first.

        Without a scope: everything the caller may see (users: their own uploads and the
        catalog; admins: every record). ``latest_only`` keeps each package's highest
        AVAILABLE version among those records.

        Raises:
            ForbiddenError: A user asked for ``AppScope.ALL``.
        """
        query = list_query(
            principal,
            scope=scope,
            package_name=package_name,
            latest_only=latest_only,
            statuses=statuses,
            limit=max(1, min(limit, 1000)),
            offset=max(offset, 0),
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [Application.from_row(row) for row in rows]

    async def get_app(self, principal: Principal, app_id: str) -> Application:
        """One application.

        Raises:
            NotFoundError: No such record, or the caller may not see it.
        """
        async with self.db.read() as conn:
            app = await get_txn(conn, app_id)
        if app is None or not can_see(principal, app):
            raise NotFoundError(f"no application {app_id!r}")
        return app

    async def download(self, principal: Principal, app_id: str) -> tuple[Application, Download]:
        """How the caller gets the APK: a presigned URL made now, or a local file to stream.

        Raises:
            NotFoundError: No such record, or its object is missing.
            ConflictError: The application is not AVAILABLE.
            UnavailableError: The store cannot be reached.
        """
        app = await self.installable_app(principal, app_id)
        try:
            target = await self.storage.download(
                app.object_key, filename=app.download_name, ttl=self.config.download_url_ttl
            )
        except StorageUnavailableError as error:
            raise UnavailableError(f"object storage is unavailable: {error}") from error
        except StorageError as error:
            raise NotFoundError(str(error), code="object_missing") from error
        return app, target

    async def installable_app(self, principal: Principal, app_id: str) -> Application:
        """An application the caller may put on a device: readable by them and AVAILABLE.

        Raises:
            NotFoundError: No such record, or the caller may not see it.
            ConflictError: It is not AVAILABLE (``not_available``).
        """
        app = await self.get_app(principal, app_id)
        if app.status is not AppStatus.AVAILABLE:
            raise ConflictError(f"application {app_id} is {app.status}", code="not_available")
        return app

    @contextlib.asynccontextmanager
    async def open_apk(
        self, principal: Principal, app_id: str
    ) -> AsyncIterator[tuple[Application, AsyncIterator[bytes]]]:
        """The APK's record and its bytes, streamed from object storage (installs read it).

        Raises:
            NotFoundError: As :meth:`installable_app`; or the object is missing
                (``object_missing``, also while iterating).
            ConflictError: As :meth:`installable_app`.
            UnavailableError: The store cannot be reached (also while iterating).
        """
        app = await self.installable_app(principal, app_id)
        chunks = _domain_errors(self.storage.read(app.object_key))
        try:
            yield app, chunks
        finally:
            await chunks.aclose()

    # -- deleting -----------------------------------------------------------------------

    async def delete_app(self, principal: Principal, app_id: str) -> Application:
        """Remove an application's object, then its record (kept as DELETED).

        Admins may delete any application; an uploader their own unless it is in the catalog.
        The record is hidden (DELETING, no longer latest) before the object goes, and marked
        DELETED only after: a crash in between leaves a DELETING record that a repeated
        delete or ``apps reconcile --fix`` finishes; never a live record without its object.

        Raises:
            NotFoundError: No such record (or already deleted), or the caller may not see it.
            ForbiddenError: Someone else's catalog application.
            ConflictError: Its upload saga is still running (``upload_in_progress``), or the
                uploader's own application is in the catalog (``published``).
            UnavailableError: The store cannot be reached (the record stays DELETING).
        """
        app = await self._hide(principal, app_id)
        try:
            await self.storage.delete(app.object_key)
        except StorageUnavailableError as error:
            raise UnavailableError(f"object storage is unavailable: {error}") from error
        async with self.db.begin() as conn:
            await conn.execute(
                update(applications)
                .where(
                    applications.c.id == app_id,
                    applications.c.status == AppStatus.DELETING.value,
                )
                .values(status=AppStatus.DELETED.value, updated_at=datetime.now(UTC))
            )
            deleted = await get_txn(conn, app_id)
        assert deleted is not None
        log.info("application deleted", extra=_audit(deleted, principal))
        return deleted

    async def _hide(self, principal: Principal, app_id: str) -> Application:
        async with self.db.read() as conn:
            app = deletable(principal, await get_txn(conn, app_id), app_id)
        if app.status is AppStatus.UPLOADING:
            await self._check_upload_over(app)
        async with self.db.begin() as conn:
            app = deletable(principal, await get_txn(conn, app_id, lock=True), app_id)
            if app.status is AppStatus.UPLOADING:
                await self._check_upload_over(app)
            if app.status is not AppStatus.DELETING:
                await conn.execute(
                    update(applications)
                    .where(applications.c.id == app_id)
                    .values(
                        status=AppStatus.DELETING.value,
                        is_latest=False,
                        updated_at=datetime.now(UTC),
                    )
                )
                await refresh_latest_txn(conn, app.package_name)
        return app

    async def _check_upload_over(self, app: Application) -> None:
        try:
            run = await self.engine.get(app.saga_id)
        except SagaNotFoundError:
            return
        if run.status.is_active:
            raise ConflictError(
                f"application {app.id} is still uploading (saga {app.saga_id})",
                code="upload_in_progress",
            )

    # -- the catalog ----------------------------------------------------------------------

    async def publish_app(self, principal: Principal, app_id: str) -> Application:
        """Put an AVAILABLE application in the catalog, where every user may read it. Admins only.

        Publishing a published application changes nothing: its first publication stays.

        Raises:
            ForbiddenError: The caller is not an admin.
            NotFoundError: No such record.
            ConflictError: The application is not AVAILABLE (``not_available``).
        """
        return await self._set_published(principal, app_id, published=True)

    async def unpublish_app(self, principal: Principal, app_id: str) -> Application:
        """Take an application out of the catalog: private to its uploader again. Admins only.

        Unpublishing an application that is not published changes nothing.

        Raises:
            ForbiddenError: The caller is not an admin.
            NotFoundError: No such record.
        """
        return await self._set_published(principal, app_id, published=False)

    async def _set_published(
        self, principal: Principal, app_id: str, *, published: bool
    ) -> Application:
        if not principal.is_admin:
            raise ForbiddenError("publishing and unpublishing applications needs the admin role")
        publisher = principal.user_id if published else None
        async with self.db.begin() as conn:
            app, changed = await set_published_txn(conn, app_id, publisher)
        if changed:
            message = "application published" if published else "application unpublished"
            log.info(message, extra=_audit(app, principal))
        return app

    # -- housekeeping -------------------------------------------------------------------

    async def reconcile(
        self, *, fix: bool = False, package_name: str | None = None
    ) -> ReconcileReport:
        """Compare records and objects (operators; see :mod:`cloudphone.apps.reconcile`)."""
        return await Reconciler(self.db, self.engine, self.storage).run(
            fix=fix, package_name=package_name
        )

    async def sweep_spool(self) -> list[str]:
        """Remove spooled uploads whose saga is over or unknown (see ``UploadSpool.sweep``)."""
        return await self.spool.sweep(self._spool_files_in_use)

    async def _spool_files_in_use(self) -> set[str]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(saga_runs.c.data).where(
                    saga_runs.c.saga_type == self.upload_saga,
                    saga_runs.c.status.in_([s.value for s in ACTIVE]),
                )
            )
            return {str(data.get("spool_file")) for (data,) in rows if isinstance(data, dict)}

    async def start_housekeeping(self) -> None:
        """Sweep the spool now, then every ``temp_sweep_interval`` in the background."""
        await self.sweep_spool()
        self._sweeping.start()

    async def stop_housekeeping(self) -> None:
        """Stop the background sweeper."""
        await self._sweeping.stop()


def _audit(app: Application, principal: Principal) -> dict[str, object]:
    """Log fields of an act on ``app``: which one, and who did it."""
    return {
        "app_id": app.id,
        "package": app.package_name,
        "version_code": app.version_code,
        "by": principal.user_id,
        "role": principal.role.value,
    }


async def _domain_errors(chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """The store's errors while streaming an object, as the domain's."""
    try:
        async for chunk in chunks:
            yield chunk
    except StorageUnavailableError as error:
        raise UnavailableError(f"object storage is unavailable: {error}") from error
    except StorageError as error:
        raise NotFoundError(str(error), code="object_missing") from error
