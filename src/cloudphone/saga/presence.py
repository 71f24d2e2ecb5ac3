"""A worker's presence: which (type, version) pairs it drives, refreshed about once per lease.

Every worker lists itself in ``saga_workers`` when it starts, refreshes the entry once per
lease and removes it when it stops gracefully (a killed worker's entry stops counting two
leases after its last refresh). Runs whose version no live worker lists are *orphaned*: they
would wait silently otherwise. Each refresh also counts them, per (type, version), into the
``saga_runs_unknown_version`` gauge (one query).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from datetime import datetime

from cloudphone.saga import timers
from cloudphone.saga.definition import SagaKey
from cloudphone.saga.errors import DatabaseUnavailableError
from cloudphone.saga.metrics import SagaMetrics
from cloudphone.saga.outage import Outage
from cloudphone.saga.store.base import SagaStore, WorkerPresence

log = logging.getLogger("cloudphone.saga")


class Presence:
    """Keeps one worker's ``saga_workers`` entry fresh and the orphan gauge current.

    Args:
        store: The store.
        worker_id: The worker.
        sagas: The (type, version) pairs it claims.
        metrics: Where the orphan gauge lives.
        outage: The worker's outage log (a failed refresh is reported there).
    """

    def __init__(
        self,
        store: SagaStore,
        worker_id: str,
        sagas: Sequence[SagaKey],
        metrics: SagaMetrics,
        outage: Outage,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._sagas = tuple(sagas)
        self._metrics = metrics
        self._outage = outage
        self._started_at: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """List the worker now (before it claims anything), then refresh it once per lease."""
        self._started_at = self._store.clock.now()
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="saga-presence")

    async def stop(self) -> None:
        """Stop refreshing and remove the entry (runs only it drove are orphans now)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self._store.withdraw_presence(self._worker_id)
        except Exception:
            log.exception("could not remove this worker from saga_workers; it expires by itself")

    async def refresh(self) -> bool:
        """Refresh the entry and the orphan gauge; False (logged) when the store failed."""
        clock = self._store.clock
        assert self._started_at is not None
        presence = WorkerPresence(
            worker_id=self._worker_id,
            sagas=self._sagas,
            started_at=self._started_at,
            heartbeat_at=clock.now(),
            host=socket.gethostname()[:255],
            pid=os.getpid(),
        )
        try:
            await self._store.announce_presence(presence)
            self._metrics.set_unknown_versions(await self._store.count_orphaned())
        except DatabaseUnavailableError as error:
            self._outage.failed("worker presence", error)
            return False
        except Exception:
            log.exception("refreshing this worker's presence failed; trying again")
            return False
        return True

    async def _loop(self) -> None:
        period = self._store.lease.total_seconds()
        delay = period
        while True:
            await timers.sleep(self._store.clock, delay)
            # A failed refresh is tried again soon: the entry counts for two leases only.
            delay = period if await self.refresh() else period / 4
