"""``cloudphone devices apps DEVICE_ID``: an operator lists a device's applications."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudphone.cli import app
from tests.support.asgi import SECRET
from tests.support.installs_stack import install_settings, started, user

pytestmark = pytest.mark.usefixtures("restore_cli_logging")


async def installed(url: str, data_dir: Path, unique: str) -> tuple[str, str]:
    """A device with an application installed (the platform stops afterwards)."""
    ann = user(f"ann-{unique}")
    async with started(install_settings(url, data_dir, f"w-{unique}")) as installs:
        device = await installs.device(ann)
        app_ = await installs.app(ann, f"com.t{unique}.n", 3)
        run = await installs.installed(ann, device, app_)
    return device["id"], run["id"]


def test_devices_apps_lists_any_device(installs_url: str, tmp_path: Path, unique: str) -> None:
    """JSON and table name the package, version, status and saga; an unknown device exits 1."""
    device_id, saga_id = asyncio.run(installed(installs_url, tmp_path / "var", unique))
    env = {
        "CLOUDPHONE_DATA_DIR": str(tmp_path / "cli"),
        "CLOUDPHONE_DATABASE_URL": installs_url,
        "CLOUDPHONE_JWT_SECRET": SECRET,
        "CLOUDPHONE_LOG_LEVEL": "warning",
        "CLOUDPHONE_AUTO_MIGRATE": "false",
        "COLUMNS": "200",  # Rich wraps at 80 columns off a terminal: the names must fit whole
    }
    listed = CliRunner().invoke(app, ["devices", "apps", device_id, "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.stdout)
    assert (row["package_name"], row["version_code"], row["status"], row["saga_id"]) == (
        f"com.t{unique}.n",
        3,
        "INSTALLED",
        saga_id,
    )
    table = CliRunner().invoke(app, ["devices", "apps", device_id], env=env)
    assert table.exit_code == 0, table.output
    assert f"com.t{unique}.n" in table.stdout
    assert "INSTALLED" in table.stdout
    missing = CliRunner().invoke(app, ["devices", "apps", "no-such-device"], env=env)
    assert missing.exit_code == 1
    assert "no device no-such-device" in missing.output
