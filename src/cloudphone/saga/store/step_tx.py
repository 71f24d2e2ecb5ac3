"""A transactional step's transaction of its own: its progress record, then its COMMIT.

What :meth:`.sql.SqlStore.step_transaction` hands a step that runs alone (a step group's
members get :mod:`.step_group`'s instead); :mod:`.first_insert` changes only how the record
is written, for a run whose insert waited for its first step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.context import QueuedWrite
from cloudphone.saga.ports import Committed
from cloudphone.saga.progress import Progress

if TYPE_CHECKING:
    from cloudphone.saga.store.sql import SqlStore

Writes = Sequence[QueuedWrite]


class StepTx:
    """:class:`~cloudphone.saga.ports.StepTransaction` on one connection of a SQL store."""

    def __init__(self, store: SqlStore, conn: AsyncConnection) -> None:
        self._store = store
        self._conn = conn

    @property
    def session(self) -> AsyncConnection:
        """The connection of the step's transaction (``ctx.session``)."""
        return self._conn

    async def commit(
        self,
        run_id: str,
        epoch: int,
        progress: Progress,
        seq: int | None = None,
        writes: Sequence[QueuedWrite] = (),
    ) -> Committed:
        """Record the step's progress (and queued writes) with its own writes, then COMMIT."""
        committed = await self._record(run_id, epoch, progress, seq, writes)
        await self._conn.commit()
        return committed

    async def _record(
        self, run_id: str, epoch: int, progress: Progress, seq: int | None, writes: Writes
    ) -> Committed:
        """Write the step's queued writes and its progress record in the transaction."""
        return await self._store.commit_step(self._conn, run_id, epoch, progress, seq, writes)
