"""One data directory belongs to one database: a second deployment refuses to start on it.

The bug this prevents: a PostgreSQL deployment started in the ``./var`` of a SQLite one took
the SQLite deployment's device processes for orphans and killed them on its first sweep, and
``apps reconcile --fix`` would have deleted its objects.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudphone.cli import app
from cloudphone.deployment import STAMP_FILE, DeploymentMismatchError
from cloudphone.devices.config import DevicesConfig
from cloudphone.devices.models import DeviceStatus
from cloudphone.domain import Principal
from cloudphone.platform import Platform, build_platform
from cloudphone.saga import SagaStatus
from cloudphone.settings import Settings, load_settings
from tests.support.devices_stack import SMALL
from tests.support.server import TEST_SECRET, child_env, free_port

DEVICES = DevicesConfig(
    adb_port_min=23000, adb_port_max=23499, stream_port_min=23500, stream_port_max=23999
)


def settings_for(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """A deployment on ``database_url`` keeping its files in ``data_dir``."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "jwt_secret": TEST_SECRET,
        "devices": DEVICES,
        **overrides,
    }
    return load_settings(**values)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def other_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The second deployment's database: another SQLite file, or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'other' / 'other.db'}"
    url: str = request.getfixturevalue("migrated_postgres_url")
    return url


async def running_device(platform: Platform, owner: str) -> str:
    """A device of ``owner``, RUNNING on the local runtime; its id."""
    created = await platform.devices.create_device(Principal(owner), "phone", SMALL)
    run = await platform.engine.wait(created.saga_id, timedelta(seconds=30))
    assert run.status is SagaStatus.COMPLETED, run.error
    return created.device.id


async def test_a_second_database_refuses_the_first_ones_data_directory(
    tmp_path: Path, other_database: str, unique: str
) -> None:
    """The second start fails naming both deployments; the first one's device lives on."""
    data_dir = tmp_path / "var"
    first = build_platform(settings_for("", data_dir), with_worker=True)
    async with first:
        device_id = await running_device(first, f"owner-{unique}")
        device = await first.devices.get_device(Principal(f"owner-{unique}"), device_id)
        second = build_platform(settings_for(other_database, data_dir), with_worker=True)
        with pytest.raises(DeploymentMismatchError) as refused:
            await second.start()
        message = str(refused.value)
        assert first.deployment is not None
        assert first.deployment.id in message
        assert first.settings.database_url in message
        assert other_database.split("@")[-1] in message
        assert f"data directory {data_dir}" in message
        assert second.worker is None
        alive = await first.devices.runtime.inspect(device.container_name)
        assert alive is not None
        assert alive.running
        device = await first.devices.get_device(Principal(f"owner-{unique}"), device_id)
        assert device.status is DeviceStatus.RUNNING


async def test_every_directory_of_a_deployment_is_stamped_with_its_id(tmp_path: Path) -> None:
    """Data dir, spool, object root and device state carry the id; restarting keeps it."""
    settings = settings_for("", tmp_path / "var")
    async with build_platform(settings, with_worker=False) as platform:
        deployment = platform.deployment
    assert deployment is not None
    places = ["", "uploads", "objects", "devices"]
    for place in places:
        stamp = json.loads((tmp_path / "var" / place / STAMP_FILE).read_text())
        assert stamp == {"deployment_id": deployment.id, "database": settings.database_url}
    async with build_platform(settings, with_worker=True) as again:
        assert again.deployment == deployment


@pytest.mark.parametrize(
    ("setting", "place"),
    [
        ({"apps": {"storage_root": "shared"}}, "object store"),
        ({"devices": {**DEVICES.model_dump(), "local_state_dir": "shared"}}, "device state"),
        ({"apps": {"temp_dir": "shared"}}, "upload spool"),
    ],
    ids=["objects", "devices", "spool"],
)
async def test_a_shared_store_directory_is_refused_too(
    tmp_path: Path, setting: dict[str, dict[str, Any]], place: str
) -> None:
    """Separate data directories, one shared object root, device state or spool: refused."""
    shared = str(tmp_path / "shared")

    def with_shared(data_dir: Path, url: str) -> Settings:
        section, values = next(iter(setting.items()))
        values = {k: (shared if v == "shared" else v) for k, v in values.items()}
        return settings_for(url, data_dir, **{section: values})

    async with build_platform(with_shared(tmp_path / "a", ""), with_worker=False):
        pass
    other = with_shared(tmp_path / "b", f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    with pytest.raises(DeploymentMismatchError, match=f"{place}[a-z ]* {shared}"):
        await build_platform(other, with_worker=False).start()


async def test_a_recreated_database_is_told_how_to_adopt_the_directory(tmp_path: Path) -> None:
    """Same URL, new database: the refusal says which stamp to delete, and that works."""
    settings = settings_for("", tmp_path / "var")
    async with build_platform(settings, with_worker=False):
        pass
    Path(settings.database_url.removeprefix("sqlite+aiosqlite:///")).unlink()  # noqa: ASYNC240
    with pytest.raises(DeploymentMismatchError, match="recreated since") as refused:
        await build_platform(settings, with_worker=False).start()
    stamp = tmp_path / "var" / STAMP_FILE
    assert f"delete {stamp}" in str(refused.value)
    stamp.unlink()
    for sub in ("uploads", "objects", "devices"):
        (tmp_path / "var" / sub / STAMP_FILE).unlink()
    async with build_platform(settings, with_worker=False) as adopted:
        assert adopted.deployment is not None


async def test_reconcile_fix_refuses_another_deployments_objects(
    tmp_path: Path, other_database: str
) -> None:
    """`apps reconcile --fix` from the other database exits 1 and deletes nothing."""
    data_dir = tmp_path / "var"
    apk = tmp_path / "a.apk"
    apk.write_bytes(b"not really an apk")
    async with build_platform(settings_for("", data_dir), with_worker=False) as first:
        await first.apps.storage.put_file("apps/com.example/1/a.apk", apk, size=17)
    other_home = settings_for(other_database, tmp_path / "other-var")
    async with build_platform(other_home, with_worker=False):
        pass  # the other deployment exists (migrated, its id made) in a directory of its own
    env = {
        "CLOUDPHONE_DATA_DIR": str(data_dir),
        "CLOUDPHONE_DATABASE_URL": other_database,
        "CLOUDPHONE_JWT_SECRET": TEST_SECRET,
        "CLOUDPHONE_LOG_LEVEL": "warning",
    }
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["apps", "reconcile", "--fix"], env=env
    )
    assert result.exit_code == 1, result.output
    assert "refusing to start: data directory" in result.stderr
    assert (data_dir / "objects" / "apps" / "com.example" / "1" / "a.apk").exists()


def test_serve_refuses_with_one_clear_line(tmp_path: Path) -> None:
    """`cloudphone serve` on another database's directory: exit 1, the reason, no traceback."""
    data_dir = tmp_path / "var"

    async def first_start() -> None:
        async with build_platform(settings_for("", data_dir), with_worker=False):
            pass

    asyncio.run(first_start())
    other = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "cloudphone", "serve", "--port", str(free_port())],
        env=child_env(data_dir, other),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "error: refusing to start: data directory" in done.stderr
    assert "Traceback" not in done.stderr
