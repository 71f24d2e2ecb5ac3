"""The device watch: notice within seconds that a device's process or container is gone.

A RUNNING device dies without telling anyone when its process ends with the worker that
started it (local devices end with their parent, even on SIGKILL), or when its container is
killed (``docker kill``, a daemon restart). Every worker process runs :meth:`DeviceWatch.check`
every ``devices.watch_interval`` (a few seconds):

* **Cheap.** A round costs one database query (the RUNNING and RESTARTING devices of this
  runtime) and one runtime listing (:meth:`~.runtimes.base.DeviceRuntime.list`: one Docker API
  call, one ``/proc`` scan for local devices), however many devices there are; healthy
  devices cost nothing more.
* **One restarter.** A dead device is claimed by a conditional update RUNNING → RESTARTING:
  of the workers that noticed it, exactly one wins and restarts it, the others leave it alone.
  A device still RESTARTING after a whole restart's time (its restarter died too) is claimed
  again the same way, conditional on its ``updated_at`` being that old.
* **Visible.** The API shows RESTARTING meanwhile; then RUNNING (``error`` cleared), or
  STOPPED with ``error`` saying why it could not be started again (its container is gone, it
  did not boot). Its owner can ``start`` or delete it; it keeps its quota and ports.

Devices are read *before* containers are listed: a device RUNNING at the read had a running
container, so a container stopped in the later listing is really down — unless its owner
stopped or deleted it meanwhile, and then the conditional claim fails and nothing is done. A
device whose container this runtime does not list at all is left alone: it may run on another
machine's runtime (local runtimes on two hosts, or two Docker daemons, sharing one database),
whose own workers watch it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from cloudphone.devices.create import container_name
from cloudphone.devices.models import DeviceStatus, devices
from cloudphone.devices.records import Device, device_from_row, update_device_txn
from cloudphone.devices.runtimes.base import (
    Container,
    ContainerNotFoundError,
    DeviceRuntime,
    DeviceRuntimeError,
)
from cloudphone.saga import Database

log = logging.getLogger("cloudphone.devices")

WATCHED = (DeviceStatus.RUNNING, DeviceStatus.RESTARTING)
"""Statuses whose container must be running."""


@dataclass(frozen=True)
class WatchReport:
    """What a round found and did."""

    checked: int = 0
    """Devices whose container the round looked at."""
    restarted: list[str] = field(default_factory=list)
    """Devices this process started again: RUNNING."""
    failed: list[str] = field(default_factory=list)
    """Devices this process could not start again: STOPPED with the reason in ``error``."""


class DeviceWatch:
    """Finds RUNNING devices whose container stopped and restarts them (see the module doc).

    Args:
        db: The database holding the devices.
        runtime: The runtime this process drives; only its devices are watched.
        boot_timeout: How long a restarted device may take to answer its handshake.
        call_timeout: How long the runtime's start call may take.
    """

    def __init__(
        self,
        db: Database,
        runtime: DeviceRuntime,
        *,
        boot_timeout: timedelta,
        call_timeout: timedelta,
    ) -> None:
        self.db = db
        self.runtime = runtime
        self.boot_timeout = boot_timeout
        self.restart_timeout = boot_timeout + call_timeout
        """Longest a restart takes; a RESTARTING device older than that lost its restarter."""
        self._limit = asyncio.Semaphore(8)

    async def check(self, now: datetime | None = None) -> WatchReport:
        """One round: claim every dead device, then restart the claimed ones concurrently."""
        now = now or datetime.now(UTC)
        watched = await self._watched()
        if not watched:
            return WatchReport()
        containers = {c.name: c for c in await self.runtime.list()}
        claimed = [d for d in watched if await self._claim(d, containers, now)]
        report = WatchReport(checked=len(watched))
        await asyncio.gather(*(self._restart(d, report) for d in claimed))
        return report

    async def _watched(self) -> list[Device]:
        stmt = sa.select(devices).where(
            devices.c.status.in_([s.value for s in WATCHED]),
            devices.c.runtime == self.runtime.kind,
        )
        async with self.db.read() as conn:
            return [device_from_row(row) for row in await conn.execute(stmt)]

    async def _claim(self, device: Device, containers: dict[str, Container], now: datetime) -> bool:
        """Make this process the device's restarter, if it needs one; True if it won."""
        container = containers.get(container_name(device.create_saga_id))
        if container is None:
            return False  # not this runtime's (see the module docstring)
        stale = now - self.restart_timeout
        if device.status is DeviceStatus.RUNNING:
            if container.running:
                return False
            condition = devices.c.status == DeviceStatus.RUNNING.value
        elif device.updated_at < stale:  # RESTARTING, and its restarter is gone
            condition = sa.and_(
                devices.c.status == DeviceStatus.RESTARTING.value, devices.c.updated_at < stale
            )
        else:
            return False
        async with self.db.begin() as conn:
            claimed = await conn.execute(
                sa.update(devices)
                .where(devices.c.id == device.id, condition)
                .values(
                    status=DeviceStatus.RESTARTING.value,
                    error=f"its container was found {container.state}; restarting it",
                    updated_at=datetime.now(UTC),
                )
            )
        if claimed.rowcount != 1:
            return False
        log.warning("device %s: container %s, restarting it", device.id, container.state)
        return True

    async def _restart(self, device: Device, report: WatchReport) -> None:
        name = container_name(device.create_saga_id)
        async with self._limit:
            try:
                async with asyncio.timeout(self.restart_timeout.total_seconds()):
                    container = await self.runtime.start(name)
                    await self.runtime.initialize(
                        container, device.id, device.spec, timeout=self.boot_timeout.total_seconds()
                    )
            except ContainerNotFoundError as error:
                await self._give_up(device, f"its container is gone ({error})", report)
                return
            except (DeviceRuntimeError, TimeoutError) as error:
                with contextlib.suppress(DeviceRuntimeError):
                    await self.runtime.stop(name)  # STOPPED: its container must not run
                await self._give_up(device, f"it did not start again ({error})", report)
                return
        if await self._finish(device, DeviceStatus.RUNNING, None):
            report.restarted.append(device.id)

    async def _give_up(self, device: Device, why: str, report: WatchReport) -> None:
        reason = f"the device stopped unexpectedly and {why}; start or delete it"
        log.warning("device %s: %s", device.id, reason)
        if await self._finish(device, DeviceStatus.STOPPED, reason):
            report.failed.append(device.id)

    async def _finish(self, device: Device, target: DeviceStatus, error: str | None) -> bool:
        """RESTARTING → ``target``; False if someone deleted it meanwhile."""
        async with self.db.begin() as conn:
            return await update_device_txn(
                conn,
                device.id,
                expect={DeviceStatus.RESTARTING},
                now=datetime.now(UTC),
                status=target,
                error=error,
            )
