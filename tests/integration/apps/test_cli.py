"""``cloudphone apps reconcile``: lists drift (exit 1), fixes it with --fix, then reports clean."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cloudphone import deployment
from cloudphone.apps.keys import object_key
from cloudphone.apps.storage.filesystem import FilesystemStorage
from cloudphone.cli import app
from cloudphone.domain import Principal
from tests.support.apps_harness import apk, build_apps, package_for
from tests.support.server import TEST_SECRET

pytestmark = pytest.mark.usefixtures("restore_cli_logging")


async def drifted(database_url: str, unique: str, data_dir: Path) -> tuple[str, str]:
    """One good upload and one orphan object in the platform's default filesystem store."""
    storage = FilesystemStorage(data_dir / "objects")
    await storage.start()
    apps = await build_apps(database_url, unique, storage, data_dir / "uploads")
    async with apps.db.begin() as conn:  # the migrations make it; build_apps uses create_all
        await conn.run_sync(deployment.metadata.create_all)
    package = package_for(unique)
    try:
        async with apps.engine.worker():
            await apps.upload_and_wait(Principal(f"u-{unique}"), apk(package, 1))
        orphan = object_key(package, 2, str(uuid.uuid4()))
        source = data_dir / "orphan.bin"
        source.write_bytes(b"orphan")
        await storage.put_file(orphan, source, size=6)
    finally:
        await apps.close()
    return package, orphan


def test_reconcile_lists_then_fixes_then_is_clean(
    database_url: str, unique: str, tmp_path: Path
) -> None:
    package, orphan = asyncio.run(drifted(database_url, unique, tmp_path))
    env = {
        "CLOUDPHONE_DATA_DIR": str(tmp_path),
        "CLOUDPHONE_DATABASE_URL": database_url,
        "CLOUDPHONE_JWT_SECRET": TEST_SECRET,
        "CLOUDPHONE_LOG_LEVEL": "warning",
        "COLUMNS": "200",  # Rich wraps at 80 columns off a terminal: the key must fit whole
    }

    def cli(*args: str) -> Result:
        return CliRunner().invoke(app, ["apps", "reconcile", "--package", package, *args], env=env)

    listed = cli("--json")
    assert listed.exit_code == 1, listed.output
    assert json.loads(listed.stdout)["orphan_objects"] == [orphan]
    assert (tmp_path / "objects" / orphan).exists()
    table = cli()
    assert table.exit_code == 1  # listing only: no --fix
    assert "run with --fix" in table.stdout
    repaired = cli("--fix")
    assert repaired.exit_code == 0, repaired.output
    assert orphan in repaired.stdout
    assert not (tmp_path / "objects" / orphan).exists()
    clean = cli()
    assert clean.exit_code == 0, clean.output
    assert "nothing to reconcile" in clean.output
