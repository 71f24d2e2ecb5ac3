"""The engine's reads of runs: one run, its history, lists and the console's counts."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING

from cloudphone.saga.errors import SagaNotFoundError
from cloudphone.saga.ports import Clock
from cloudphone.saga.records import SagaEvent, SagaRun
from cloudphone.saga.state import SagaStatus
from cloudphone.saga.stats import SagaStats
from cloudphone.saga.store.base import RunFilter, SagaStore
from cloudphone.saga.store.stats import read_stats_txn

if TYPE_CHECKING:
    from cloudphone.saga.store.database import Database


class RunReads:
    """Reading runs, mixed into :class:`~cloudphone.saga.SagaEngine`."""

    store: SagaStore
    clock: Clock

    if TYPE_CHECKING:

        @property
        def db(self) -> Database:
            """The engine's database (see :attr:`SagaEngine.db`)."""
            ...

    async def get(self, saga_id: str) -> SagaRun:
        """The run's current state; raises SagaNotFoundError."""
        run = await self.store.get(saga_id)
        if run is None:
            raise SagaNotFoundError(f"no saga run {saga_id!r}")
        return run

    async def find(self, saga_type: str, idempotency_key: str) -> SagaRun | None:
        """The run of ``saga_type`` started with ``idempotency_key``, or None."""
        return await self.store.find(saga_type, idempotency_key)

    async def history(self, saga_id: str) -> list[SagaEvent]:
        """The run's events in order; raises SagaNotFoundError for an unknown id."""
        events = await self.store.history(saga_id)
        if not events:
            await self.get(saga_id)
        return events

    async def list(
        self,
        *,
        status: SagaStatus | None = None,
        saga_type: str | None = None,
        started_by: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        needs_attention: bool = False,
        ids: Collection[str] | None = None,
        limit: int = 50,
        offset: int = 0,
        orphaned: bool = False,
        forked_from: str | None = None,
    ) -> list[SagaRun]:
        """Runs matching the filters, newest first (``ids``: only these runs, at most 1000).

        ``orphaned``: only active runs whose (type, version) no live worker drives (they would
        wait until a worker with that version starts, or an operator migrates them).
        ``forked_from``: only the forks of that run.
        """
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        if ids is not None and len(ids) > 1000:
            raise ValueError("at most 1000 ids")
        where = RunFilter(
            status=status,
            saga_type=saga_type,
            started_by=started_by,
            created_after=created_after,
            created_before=created_before,
            needs_attention=needs_attention,
            ids=frozenset(ids) if ids is not None else None,
            orphaned=orphaned,
            forked_from=forked_from,
        )
        return await self.store.list_runs(where, limit=limit, offset=max(offset, 0))

    async def stats(
        self,
        *,
        since: datetime | None = None,
        minutes: int = 60,
        started_by: str | None = None,
    ) -> SagaStats:
        """Counts per type and status, activity per minute and durations per type.

        Args:
            since: Count the runs created at or after this time; None counts every run.
            minutes: Minutes of per-minute activity, ending with the current one; durations
                are measured over the runs that finished in them.
            started_by: Only the runs this user started.
        """
        if not 1 <= minutes <= 24 * 60:
            raise ValueError("minutes must be between 1 and 1440")
        async with self.db.read() as conn:
            return await read_stats_txn(
                conn, since=since, minutes=minutes, now=self.clock.now(), started_by=started_by
            )
