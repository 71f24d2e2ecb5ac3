"""The apps service wired for tests: one database, one store, a spool, fast retries."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from cloudphone.apps.config import AppsConfig
from cloudphone.apps.models import Application, applications, create_apps_schema
from cloudphone.apps.reconcile import Reconciler
from cloudphone.apps.service import AppsService, UploadAccepted
from cloudphone.apps.spool import UploadSpool
from cloudphone.apps.storage.base import ObjectInfo, ObjectStorage, PendingUpload
from cloudphone.apps.upload import build_upload_saga
from cloudphone.domain import Principal, Role
from cloudphone.saga import Database, RetryPolicy, SagaEngine, SagaRun
from cloudphone.saga.store.tables import saga_runs
from tests.support.apk_builder import build_apk_bytes

FAST_RETRY = RetryPolicy(
    max_attempts=4,
    initial_interval=timedelta(milliseconds=10),
    max_interval=timedelta(milliseconds=50),
    jitter=False,
)
"""Production shape (4 attempts) with millisecond waits."""

ADMIN = Principal("admin-apps", Role.ADMIN)
CHUNK = 64 * 1024


def package_for(unique: str, name: str = "app") -> str:
    """A package name no other test uses (tests share the PostgreSQL database)."""
    return f"com.t{unique}.{name}"


def apk(package: str, version_code: int, **options: Any) -> bytes:
    """A small APK of ``package`` at ``version_code``."""
    options.setdefault("label", f"{package} v{version_code}")
    return build_apk_bytes(package=package, version_code=version_code, **options)


async def chunks_of(data: bytes, size: int = CHUNK) -> AsyncIterator[bytes]:
    """``data`` as an async stream of chunks (what the HTTP layer hands the service)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def file_chunks(path: Path, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """A file as an async stream of chunks."""
    with path.open("rb") as file:
        while chunk := file.read(size):
            yield chunk


def sha256(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


async def fetch_bytes(url: str) -> bytes:
    """GET a (presigned) URL with no credentials of ours."""
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.content


MakeApps = Callable[..., Awaitable["Apps"]]
"""The ``make_apps`` fixture: builds the service with ``build_apps`` options."""


@dataclass
class Apps:
    """The apps service, its engine, store and spool on one test database."""

    db: Database
    engine: SagaEngine
    service: AppsService
    storage: ObjectStorage
    spool: UploadSpool
    saga_name: str
    reconciler: Reconciler

    async def upload(self, principal: Principal, data: bytes, **options: Any) -> UploadAccepted:
        """Hand ``data`` to the upload use case in 64 KiB chunks."""
        return await self.service.upload_app(principal, chunks_of(data), **options)

    async def upload_and_wait(
        self, principal: Principal, data: bytes, **options: Any
    ) -> tuple[SagaRun, Application | None]:
        """Upload, wait for the saga to end, return the run and the record."""
        accepted = await self.upload(principal, data, **options)
        run = await self.engine.wait(accepted.saga_id, timeout=timedelta(seconds=30))
        return run, await self.record(accepted.application.id)

    async def record(self, app_id: str) -> Application | None:
        """The raw record (no visibility rules)."""
        async with self.db.read() as conn:
            row = (
                (await conn.execute(sa.select(applications).where(applications.c.id == app_id)))
                .mappings()
                .first()
            )
        return None if row is None else Application.from_row(row)

    async def records(self, package_name: str) -> list[Application]:
        """Every record of a package, lowest version first."""
        async with self.db.read() as conn:
            rows = (
                (
                    await conn.execute(
                        sa.select(applications)
                        .where(applications.c.package_name == package_name)
                        .order_by(applications.c.version_code, applications.c.created_at)
                    )
                )
                .mappings()
                .all()
            )
        return [Application.from_row(row) for row in rows]

    async def run_count(self) -> int:
        """Runs of this test's upload saga."""
        async with self.db.read() as conn:
            n = await conn.scalar(
                sa.select(sa.func.count()).where(saga_runs.c.saga_type == self.saga_name)
            )
        return int(n or 0)

    async def objects(self, prefix: str = "apps/") -> list[ObjectInfo]:
        """Objects in the store."""
        return [o async for o in self.storage.list_objects(prefix)]

    async def pending(self, prefix: str = "apps/") -> list[PendingUpload]:
        """Unfinished uploads in the store."""
        return [u async for u in self.storage.list_pending_uploads(prefix)]

    def spooled(self) -> Sequence[str]:
        """Names of the files in the spool."""
        if not self.spool.directory.is_dir():
            return []
        return sorted(p.name for p in self.spool.directory.iterdir())

    async def close(self) -> None:
        """Close the engine and the database (the store is closed by its fixture)."""
        await self.engine.close()
        await self.db.dispose()


async def build_apps(
    database_url: str,
    unique: str,
    storage: ObjectStorage,
    spool_dir: Path,
    *,
    retry: RetryPolicy = FAST_RETRY,
    deadline: timedelta = timedelta(minutes=10),
    store_timeout: timedelta = timedelta(minutes=5),
    config: AppsConfig | None = None,
    **engine_options: Any,
) -> Apps:
    """Wire the apps service on ``database_url`` with a per-test saga name."""
    db = Database(database_url)
    spool = UploadSpool(spool_dir)
    name = f"app_upload_{unique}"
    saga = build_upload_saga(
        storage, spool, timeout=deadline, store_timeout=store_timeout, retry=retry, name=name
    )
    options: dict[str, Any] = {
        "lease": timedelta(seconds=2),
        "poll_interval": timedelta(milliseconds=50),
        "worker_id": f"apps-{unique}",
        **engine_options,
    }
    engine = SagaEngine(db, [saga], **options)
    await engine.create_schema()
    await create_apps_schema(db)
    service = AppsService(db, engine, storage, spool, config or AppsConfig(), upload_saga=name)
    return Apps(db, engine, service, storage, spool, name, Reconciler(db, engine, storage))
