"""The sweeper: the safety net that makes the runtime and the database agree again.

The sagas never leave anything behind on their own. The sweeper covers what they cannot see:

* **Orphan containers**: a create call that reached the runtime after its attempt was
  cancelled, stray local agents of a platform killed between spawn and bookkeeping,
  containers of a database that was reset. A container is kept when its device (found through
  the creation saga id in its name or labels) is CREATING, RUNNING, STOPPED or DELETING, or
  when its creation saga is still active; everything else is removed.
* **Stale creations**: a device still CREATING whose ``device_create`` run ended COMPENSATED or
  TIMED_OUT without undoing the request's writes (the request transaction inserts the device
  and reserves its quota before any step runs; the sagas undo that themselves, even for a run
  cancelled while PENDING, so this only covers runs closed by other means, e.g. by hand). Its
  reservation and ports are released and it becomes ERROR.
Dead RUNNING devices are the device watch's (:mod:`.watch`): it runs every few seconds, and
:meth:`~cloudphone.devices.service.DeviceService.sweep` runs one round of it first.

Run it at platform start ("cleaned on start") and periodically.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cloudphone.devices import quota
from cloudphone.devices.create import container_name, saga_id_of_container
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.ports import release_saga_ports_txn
from cloudphone.devices.records import (
    get_by_saga_txn,
    list_devices_txn,
    update_device_txn,
)
from cloudphone.devices.runtimes.base import (
    LABEL_SAGA,
    Container,
    DeviceRuntime,
)
from cloudphone.saga import SagaEngine, SagaNotFoundError, SagaStatus

log = logging.getLogger("cloudphone.devices")

KEEP = frozenset(
    {
        DeviceStatus.CREATING,
        DeviceStatus.RUNNING,
        DeviceStatus.RESTARTING,
        DeviceStatus.STOPPED,
        DeviceStatus.DELETING,
    }
)
"""Device statuses whose container must stay."""

ABANDONED = frozenset({SagaStatus.COMPENSATED, SagaStatus.TIMED_OUT})
"""Creation outcomes after which a CREATING device is stale."""


@dataclass(frozen=True)
class SweepReport:
    """What a sweep did."""

    kept: list[str] = field(default_factory=list)
    """Containers left alone."""
    removed: list[str] = field(default_factory=list)
    """Orphan containers removed."""
    repaired: list[str] = field(default_factory=list)
    """Stale CREATING devices turned ERROR, their quota and ports released."""
    restarted: list[str] = field(default_factory=list)
    """RUNNING devices whose container was started again (by the watch round run first)."""
    failed: list[str] = field(default_factory=list)
    """RUNNING devices whose container could not be started again: STOPPED, ``error`` says
    why."""


class Sweeper:
    """Compares the runtime's containers and the CREATING devices with the sagas.

    Args:
        engine: The saga engine (its database holds the devices; it knows the runs).
        runtime: The runtime to sweep.
    """

    def __init__(self, engine: SagaEngine, runtime: DeviceRuntime) -> None:
        self.engine = engine
        self.runtime = runtime

    async def sweep(self, report: SweepReport | None = None) -> SweepReport:
        """Repair stale creations, remove orphan containers (adding to ``report``)."""
        report = report or SweepReport()
        await self._repair_stale(report)
        for container in await self.runtime.list():
            if await self._owned(container):
                report.kept.append(container.name)
            else:
                await self.runtime.remove(container.name)
                report.removed.append(container.name)
        return report

    async def _saga_status(self, saga_id: str) -> SagaStatus | None:
        try:
            return (await self.engine.get(saga_id)).status
        except SagaNotFoundError:
            return None

    async def _owned(self, container: Container) -> bool:
        saga_id = container.labels.get(LABEL_SAGA) or saga_id_of_container(container.name)
        if saga_id is None:
            return False
        async with self.engine.db.read() as conn:
            device = await get_by_saga_txn(conn, saga_id)
        if device is not None and device.status in KEEP:
            return True
        status = await self._saga_status(saga_id)
        return status is not None and not status.is_terminal

    async def _repair_stale(self, report: SweepReport) -> None:
        async with self.engine.db.read() as conn:
            creating = await list_devices_txn(
                conn, owner_id=None, statuses={DeviceStatus.CREATING}, limit=1000
            )
        for device in creating:
            saga_id = device.create_saga_id
            status = await self._saga_status(saga_id)
            if status is not None and status not in ABANDONED:
                continue
            await self.runtime.remove(container_name(saga_id))
            now = datetime.now(UTC)
            async with self.engine.db.begin() as conn:
                await quota.release_txn(conn, saga_id, now)
                await release_saga_ports_txn(conn, saga_id)
                repaired = await update_device_txn(
                    conn,
                    device.id,
                    expect={DeviceStatus.CREATING},
                    now=now,
                    status=DeviceStatus.ERROR,
                    error=f"creation {saga_id} ended {status or 'missing'} without finishing",
                )
            if repaired:
                report.repaired.append(device.id)
