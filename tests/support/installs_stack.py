"""The whole platform for install tests: local devices, an apps store, in-process HTTP.

Built through ``cloudphone.platform`` like a deployment: the test drives it over the API as a
user would, and checks the device over ADB as a user would (``pm list packages``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from adb_shell.adb_device_async import AdbDeviceTcpAsync
from fastapi import FastAPI
from pydantic import SecretStr

from cloudphone.api.app import create_app
from cloudphone.devices.runtimes.base import DeviceRuntime
from cloudphone.domain import Role
from cloudphone.installs.spool import ApkSpool
from cloudphone.platform import Platform, build_platform
from cloudphone.saga.ports import StepHooks
from cloudphone.settings import Settings, load_settings
from tests.support.apk_builder import build_apk_bytes
from tests.support.apps_http import post_apk
from tests.support.apps_s3 import ACCESS_KEY, REGION, SECRET_KEY, TEST_BUCKET
from tests.support.asgi import SECRET, headers
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.devices_stack import make_config
from tests.support.waiting import eventually

TERMINAL = {"COMPLETED", "COMPENSATED", "TIMED_OUT", "FAILED"}
DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""Parameters of a fixture choosing the database: a fresh SQLite file or PostgreSQL."""
SMALL_DEVICE = {"cpu": 0.5, "memory_mb": 256, "storage_mb": 1024, "resolution": "720x1280"}


def install_settings(
    database_url: str,
    data_dir: Path,
    worker_id: str,
    *,
    s3: tuple[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings of a test platform: local devices, fast retries, filesystem or S3 storage.

    Args:
        database_url: The test database.
        data_dir: The platform's files (device state, objects, spools).
        worker_id: Its worker's id.
        s3: (endpoint, prefix) of a SeaweedFS to keep the APKs in, else the filesystem.
        **overrides: Other settings.
    """
    apps: dict[str, Any] = {}
    if s3 is not None:
        apps = {
            "storage": "s3",
            "s3_endpoint": s3[0],
            "s3_prefix": s3[1],
            "s3_bucket": TEST_BUCKET,
            "s3_region": REGION,
            "s3_access_key": SecretStr(ACCESS_KEY),
            "s3_secret_key": SecretStr(SECRET_KEY),
            "s3_connect_timeout": timedelta(seconds=1),
            "s3_read_timeout": timedelta(seconds=5),
            "s3_max_attempts": 1,
        }
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "jwt_secret": SecretStr(SECRET),
        "worker_id": worker_id,
        "worker_lease": timedelta(seconds=2),
        "worker_poll_interval": timedelta(milliseconds=50),
        "shutdown_grace": timedelta(seconds=5),
        "devices": make_config(sweep_interval=timedelta(0)),
        "apps": apps,
        **overrides,
    }
    return load_settings(**values)


def migrated_database(prefix: str) -> Iterator[str]:
    """Body of a fixture: a PostgreSQL database of its own (the platforms migrate it)."""
    url = create_postgres_database(prefix)
    yield url
    drop_postgres_database(url)


def chosen_database(request: pytest.FixtureRequest, tmp_path: Path, postgres_fixture: str) -> str:
    """The URL a :data:`DATABASES` parameter names (PostgreSQL: ``postgres_fixture``'s)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'installs.db'}"
    url: str = request.getfixturevalue(postgres_fixture)
    return url


def user(name: str, role: Role = Role.USER) -> dict[str, str]:
    """Authorization headers of ``name``."""
    return headers(name, role)


@dataclass
class Installs:
    """A started platform and an HTTP client on its API."""

    platform: Platform
    http: httpx.AsyncClient
    asgi: FastAPI
    """The app (API and console) the client talks to: more clients may share it."""

    def client(self) -> httpx.AsyncClient:
        """Another client of the same app (a cookie jar of its own, for the console)."""
        transport = httpx.ASGITransport(app=self.asgi)
        return httpx.AsyncClient(transport=transport, base_url="http://installs.test")

    async def saga(self, who: dict[str, str], saga_id: str, seconds: float = 45) -> Any:
        """Wait until the run is over; returns it."""

        async def read() -> Any:
            return (await self.http.get(f"/sagas/{saga_id}", headers=who)).json()

        return await eventually(read, lambda r: r.get("status") in TERMINAL, timeout=seconds)

    async def device(self, who: dict[str, str], name: str = "phone") -> Any:
        """A RUNNING device of ``who``'s."""
        posted = await self.http.post("/devices", json={"name": name, **SMALL_DEVICE}, headers=who)
        assert posted.status_code == 202, posted.text
        run = await self.saga(who, posted.json()["saga_id"])
        assert run["status"] == "COMPLETED", run
        device = await self.http.get(f"/devices/{posted.json()['device']['id']}", headers=who)
        assert device.json()["status"] == "RUNNING", device.text
        return device.json()

    async def app(self, who: dict[str, str], package: str, version_code: int) -> Any:
        """An AVAILABLE upload of ``who``'s: ``package`` at ``version_code``."""
        data = build_apk_bytes(
            package=package, version_code=version_code, version_name=f"{version_code}.0"
        )
        posted = await post_apk(self.http, who, data)
        assert posted.status_code == 202, posted.text
        run = await self.saga(who, posted.json()["saga_id"])
        assert run["status"] == "COMPLETED", run
        return posted.json()["application"]

    async def install(
        self, who: dict[str, str], device: Any, app: Any, **body: Any
    ) -> httpx.Response:
        """``POST /devices/{id}/apps`` (``key=`` sends an Idempotency-Key)."""
        key = body.pop("key", None)
        extra = {"Idempotency-Key": key} if key else {}
        return await self.http.post(
            f"/devices/{device['id']}/apps",
            json={"app_id": app["id"], **body},
            headers={**who, **extra},
        )

    async def installed(self, who: dict[str, str], device: Any, app: Any, **body: Any) -> Any:
        """Install and wait: the run, which must have completed."""
        posted = await self.install(who, device, app, **body)
        assert posted.status_code == 202, posted.text
        run = await self.saga(who, posted.json()["saga_id"])
        assert run["status"] == "COMPLETED", run
        return run

    async def listing(self, who: dict[str, str], device: Any) -> list[Any]:
        """``GET /devices/{id}/apps``' items."""
        got = await self.http.get(f"/devices/{device['id']}/apps", headers=who)
        assert got.status_code == 200, got.text
        items: list[Any] = got.json()["items"]
        return items

    def spool_files(self) -> list[str]:
        """What the install spool holds (partial files included)."""
        return ApkSpool(self.platform.settings.data_dir / "installs").files()

    async def runs(self, saga_type: str, started_by: str) -> list[Any]:
        """The runs of a type a user started (newest first)."""
        return await self.platform.engine.list(
            saga_type=saga_type, started_by=started_by, limit=1000
        )


async def adb_shell(device: Any, command: str) -> str:
    """What ``adb shell COMMAND`` prints on the device (a connection of its own)."""
    client = AdbDeviceTcpAsync(device["adb_host"], device["adb_port"], banner="test")
    await client.connect(read_timeout_s=5)
    try:
        return str(await client.shell(command, read_timeout_s=10))
    finally:
        await client.close()


async def packages(device: Any, contains: str) -> str:
    """``pm list packages --show-versioncode CONTAINS``, as the device prints it."""
    return await adb_shell(device, f"pm list packages --show-versioncode {contains}")


@asynccontextmanager
async def started(
    settings: Settings,
    *,
    with_worker: bool = True,
    hooks: StepHooks | None = None,
    device_runtime: DeviceRuntime | None = None,
) -> AsyncIterator[Installs]:
    """The platform of ``settings``, started, with an in-process client on its API."""
    platform = build_platform(
        settings, with_worker=with_worker, hooks=hooks, device_runtime=device_runtime
    )
    await platform.start()
    try:
        app = create_app(platform)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://installs.test") as http:
            yield Installs(platform, http, app)
    finally:
        await platform.close()
