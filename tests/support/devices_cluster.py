"""Real ``cloudphone`` processes running devices: an API without a worker, and workers.

For the chaos tests of the device watch: devices are created over HTTP, run by the workers'
runtime (local child processes, or a private dockerd), and the test SIGKILLs processes by pid.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cloudphone.devices.links import LineLink
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.server import (
    WORKER_READY,
    CloudphoneProcess,
    auth,
    child_env,
    spawn_worker,
    start_serve,
)
from tests.support.waiting import eventually

OWNER = "watched"
"""The user whose devices the tests create."""


def device_env(workdir: Path, url: str, **extra: str) -> dict[str, str]:
    """Children on ``url``: a 0.5 s device watch, short boots, ports of their own."""
    # A random 100-port window below the ephemeral range: other suites on this machine use
    # the defaults and 21000-22999.
    base = random.randrange(23000, 30000, 100)
    return child_env(
        workdir / "var",
        url,
        CLOUDPHONE_DEVICES__WATCH_INTERVAL="PT0.5S",
        CLOUDPHONE_DEVICES__BOOT_TIMEOUT_SECONDS="10",
        CLOUDPHONE_DEVICES__ADB_PORT_MIN=str(base),
        CLOUDPHONE_DEVICES__ADB_PORT_MAX=str(base + 49),
        CLOUDPHONE_DEVICES__STREAM_PORT_MIN=str(base + 50),
        CLOUDPHONE_DEVICES__STREAM_PORT_MAX=str(base + 99),
        **extra,
    )


@dataclass
class DeviceCluster:
    """``serve --no-worker`` plus named ``cloudphone worker`` processes on one database."""

    workdir: Path
    env: dict[str, str]
    api: CloudphoneProcess
    workers: dict[str, CloudphoneProcess] = field(default_factory=dict)

    def add_worker(self, name: str) -> CloudphoneProcess:
        """Start a worker and wait until it claims work."""
        worker = spawn_worker(self.workdir, self.env, name)
        self.workers[name] = worker
        worker.wait_log(WORKER_READY)
        return worker

    def client(self) -> httpx.AsyncClient:
        """An HTTP client on the API."""
        return httpx.AsyncClient(base_url=str(self.api.base_url), timeout=20)

    async def create_device(self, http: httpx.AsyncClient, name: str = "phone") -> dict[str, Any]:
        """``POST /devices``, then wait until the device is RUNNING; returns it."""
        created = await http.post(
            "/devices", json={"name": name, "cpu": 0.5, "memory_mb": 256}, headers=auth(OWNER)
        )
        assert created.status_code == 202, created.text
        device_id = created.json()["device"]["id"]
        return await self.device_until(http, device_id, lambda d: d["status"] == "RUNNING")

    async def device_until(
        self, http: httpx.AsyncClient, device_id: str, done: Any, *, within: float = 30.0
    ) -> dict[str, Any]:
        """``GET /devices/{id}`` until ``done(device)``; returns the device."""

        async def device() -> dict[str, Any]:
            answer = await http.get(f"/devices/{device_id}", headers=auth(OWNER))
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body

        return await eventually(device, done, timeout=within, interval=0.1, what="device state")

    async def comes_back(
        self,
        http: httpx.AsyncClient,
        device: dict[str, Any],
        probe: Callable[[], Any],
        until: Callable[[Any], bool],
        what: str,
    ) -> dict[str, Any]:
        """Wait (15 s at most) until ``until(probe())``: the device was restarted.

        Then it must be RUNNING with no error and answer on its ADB port as itself; returns it.
        ``probe`` is blocking (it asks the runtime from outside) and runs in a thread.
        """
        await eventually(
            lambda: asyncio.to_thread(probe), until, timeout=15, what=f"{what}\n{self.logs()}"
        )
        back = await self.device_until(http, device["id"], lambda d: d["status"] == "RUNNING")
        assert back["error"] is None
        link = LineLink(back["adb_host"], back["adb_port"])
        assert (await link.probe("back")).serial == device["id"]
        return back

    def logs(self) -> str:
        """Every process's log tail (for failure messages)."""
        return "\n".join(
            f"--- {name}\n{p.log(3000)}" for name, p in {"api": self.api, **self.workers}.items()
        )


@contextmanager
def device_cluster(workdir: Path, **extra: str) -> Iterator[DeviceCluster]:
    """A fresh PostgreSQL database and an API on it; workers are added by the test."""
    url = create_postgres_database("cloudphone_watch")
    env = device_env(workdir, url, **extra)
    cluster: DeviceCluster | None = None
    try:
        cluster = DeviceCluster(workdir, env, start_serve(workdir, env, "--no-worker", name="api"))
        yield cluster
    finally:
        if cluster is not None:
            for process in [*cluster.workers.values(), cluster.api]:
                process.stop()
        drop_postgres_database(url)
