"""Apps on the test kit: the upload saga on a MemoryEngine over the filesystem store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudphone.apps.config import AppsConfig
from cloudphone.apps.models import create_apps_schema
from cloudphone.apps.reconcile import Reconciler
from cloudphone.apps.service import AppsService
from cloudphone.apps.spool import UploadSpool
from cloudphone.apps.storage.filesystem import FilesystemStorage
from cloudphone.apps.upload import APP_UPLOAD, build_upload_saga
from cloudphone.domain import Principal
from cloudphone.saga import Database
from cloudphone.saga.testing import MemoryEngine
from tests.support.apps_harness import Apps


@pytest.fixture
def uploader() -> Principal:
    return Principal("uploader-1")


@pytest.fixture
async def apps(tmp_path: Path) -> AsyncIterator[Apps]:
    """The production upload saga (10-minute deadline, 4 attempts) on a manual clock.

    The apps tables live in the business database the saga's transactional steps write
    through; objects go to a filesystem store, uploads to a spool, both under ``tmp_path``.
    """
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'apps.db'}")
    await create_apps_schema(db)
    storage = FilesystemStorage(tmp_path / "objects")
    await storage.start()
    spool = UploadSpool(tmp_path / "spool")
    engine = MemoryEngine([build_upload_saga(storage, spool)], database=db)
    service = AppsService(db, engine, storage, spool, AppsConfig())
    wired = Apps(db, engine, service, storage, spool, APP_UPLOAD, Reconciler(db, engine, storage))
    yield wired
    await wired.close()
    await storage.close()
