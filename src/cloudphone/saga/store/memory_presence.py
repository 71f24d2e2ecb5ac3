"""The memory store's worker presence: live workers, and the runs none of them drives."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from cloudphone.saga.definition import SagaKey
from cloudphone.saga.ports import Clock
from cloudphone.saga.store.base import LIVE_LEASES, WorkerPresence
from cloudphone.saga.store.memory_rows import Row


class MemoryPresence:
    """``saga_workers`` in memory, mixed into :class:`~.memory.MemoryStore`."""

    _clock: Clock
    _lease: timedelta
    _workers: dict[str, WorkerPresence]

    if TYPE_CHECKING:

        def _active(self) -> Iterator[Row]: ...

    async def announce_presence(self, presence: WorkerPresence) -> None:
        """Record (or refresh) a live worker."""
        self._workers[presence.worker_id] = presence

    async def withdraw_presence(self, worker_id: str) -> None:
        """Forget a worker."""
        self._workers.pop(worker_id, None)

    async def live_workers(self) -> list[WorkerPresence]:
        """Workers refreshed within the last two leases, by worker id."""
        since = self._clock.now() - LIVE_LEASES * self._lease
        live = [w for w in self._workers.values() if w.heartbeat_at >= since]
        return sorted(live, key=lambda w: w.worker_id)

    async def count_orphaned(self) -> dict[SagaKey, int]:
        """Active runs per (type, version) that no live worker drives."""
        counts: dict[SagaKey, int] = {}
        for row in self._orphans(await self.live_workers()):
            key = (row["saga_type"], row["saga_version"])
            counts[key] = counts.get(key, 0) + 1
        return counts

    def _orphans(self, live: Sequence[WorkerPresence]) -> Iterator[Row]:
        known = {key for worker in live for key in worker.sagas}
        for row in self._active():
            if (row["saga_type"], row["saga_version"]) not in known:
                yield row
