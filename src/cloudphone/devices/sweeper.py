"""The orphan sweeper: removes runtime containers that no live device or running saga owns.

The sagas never leave a container behind on their own; the sweeper is the safety net for what
they cannot see: a create call that reached the runtime after its attempt was cancelled, stray
local agents of a platform killed between spawn and bookkeeping, containers of a database
that was reset. Run it at platform start ("cleaned on start") and from time to time.

A container is kept when its device (found through the creation saga id in its name or
labels) is CREATING, RUNNING, STOPPED or DELETING, or when its creation saga is still active
(the device row may not exist yet). Everything else is removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloudphone.devices.create import saga_id_of_container
from cloudphone.devices.models import DeviceStatus
from cloudphone.devices.records import get_by_saga_txn
from cloudphone.devices.runtimes.base import LABEL_SAGA, Container, DeviceRuntime
from cloudphone.saga import SagaEngine, SagaNotFoundError

KEEP = frozenset(
    {DeviceStatus.CREATING, DeviceStatus.RUNNING, DeviceStatus.STOPPED, DeviceStatus.DELETING}
)
"""Device statuses whose container must stay."""


@dataclass(frozen=True)
class SweepReport:
    """What a sweep found."""

    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class OrphanSweeper:
    """Compares the runtime's containers with the devices table.

    Args:
        engine: The saga engine (its database holds the devices; it knows active sagas).
        runtime: The runtime to sweep.
    """

    def __init__(self, engine: SagaEngine, runtime: DeviceRuntime) -> None:
        self.engine = engine
        self.runtime = runtime

    async def sweep(self) -> SweepReport:
        """Remove every container no live device or active creation owns."""
        report = SweepReport()
        for container in await self.runtime.list():
            if await self._owned(container):
                report.kept.append(container.name)
            else:
                await self.runtime.remove(container.name)
                report.removed.append(container.name)
        return report

    async def _owned(self, container: Container) -> bool:
        saga_id = container.labels.get(LABEL_SAGA) or saga_id_of_container(container.name)
        if saga_id is None:
            return False
        async with self.engine.db.read() as conn:
            device = await get_by_saga_txn(conn, saga_id)
        if device is not None and device.status in KEEP:
            return True
        try:
            run = await self.engine.get(saga_id)
        except SagaNotFoundError:
            return False
        return not run.status.is_terminal
