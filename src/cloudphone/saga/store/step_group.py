"""Group commit for transactional steps: several runs' steps in one PostgreSQL transaction.

A transactional step costs a transaction of its own: BEGIN, the step's statements, its
progress write and COMMIT, each a round trip, and a WAL flush. Under load the steps of many
runs are due at the same moment, so they share one: a *group* holds one connection and one
transaction; its members run their step bodies on it **one after another**, each hands over
its progress, and when the last member is done one statement records every member's progress
(fenced by each run's epoch and ``last_seq``, as always) and one COMMIT ends the group.

What a member sees is what it would see if the members before it had committed just before
it started: its own writes and theirs, in order. The guarantee is unchanged: a step's business
writes commit if and only if its progress record does, because they are in the same
transaction. What is shared is the fate of that transaction, so a group never commits a
member that failed:

- a member's body raises (or times out, or its progress write is fenced, or the progress
  statement fails): the group rolls back as a whole, and every member runs its attempt again
  (:class:`~cloudphone.saga.errors.StepGroupAborted`): the same attempt, in a transaction of
  its own. That includes the member that failed, unless its body ran first on the
  connection: the others' writes it saw are undone, so whether it fails is decided on
  committed data alone (the first one saw nothing else, and its error goes to the runner
  as usual, once the rollback is done);
- the connection is lost while the group records its progress or commits: every member
  that handed its progress over gets DatabaseUnavailableError and asks the database whether
  its run's write landed, as a lone step does (the group committed or not, as one); lost
  during a body, it is that body's failure (above).

A member's writes queued with ``ctx.write`` run on the connection before it hands over its
turn (the next member must see them); only a member that is alone, in a group of one that
nobody can join any more, while no other group ends and no progress write or start is in
flight (:meth:`StepGroups.quiet`), leaves them for its progress write (one statement for both).

A group takes members while it is young (:data:`WINDOW`) and small (``size``); one member
alone costs what a lone step costs. A body that waits (for a row lock, say) makes the members
after it wait too, which is why the window is short, and why a transactional step must write
only through ``ctx.session`` (or ``ctx.write``) and never wait on another transaction of the
same database (it might be this group's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Protocol, TypeAlias

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.context import QueuedWrite
from cloudphone.saga.errors import DatabaseUnavailableError, StepGroupAborted
from cloudphone.saga.ports import Committed
from cloudphone.saga.progress import Progress
from cloudphone.saga.store.database import sharing_transaction
from cloudphone.saga.store.disconnects import (
    driver_error_unavailable,
    is_database_unavailable,
    unavailable,
)
from cloudphone.saga.store.pg_sql import Written
from cloudphone.saga.store.pg_write import driver_sql, live_connection
from cloudphone.saga.store.writes import run_writes

if TYPE_CHECKING:
    from cloudphone.saga.store.pg import PgFastPath, _Commit

log = logging.getLogger(__name__)

WINDOW = 0.02
"""Seconds after its first member arrived during which a group takes more members."""


class _Abort(Exception):
    """Thrown into the group's transaction to roll it back."""


Opener = Callable[[], AbstractAsyncContextManager[AsyncConnection]]
"""Opens a write transaction (``Database.begin``)."""
Alone = Callable[
    [AsyncConnection, str, int, Progress, "int | None", Sequence[QueuedWrite]],
    Awaitable[Committed],
]
"""Runs a lone step's queued writes and records its progress in a transaction, fenced and
explained (``commit_step``: one statement for both when it can)."""
Outcome: TypeAlias = "list[Written | None] | Committed | BaseException"
"""How a group ended: each member's write (None: fenced), a lone member's, or an error."""


class GroupWatch(Protocol):
    """Told how big each group was and how often a step ran again alone (the metrics)."""

    def record_group(self, members: int) -> None:
        """A group of ``members`` steps ended (committed or rolled back)."""

    def record_group_rerun(self) -> None:
        """A step's attempt runs again alone after its group rolled back."""


class _Unwatched:
    """Nobody watches: the groups of a store that no engine's metrics were given."""

    def record_group(self, members: int) -> None:
        pass

    def record_group_rerun(self) -> None:
        pass


class _Group:
    def __init__(self, groups: StepGroups) -> None:
        self.groups = groups
        self.loop = asyncio.get_running_loop()
        self.born = self.loop.time()
        self.members = 0
        self.active = 0
        """Members that joined and have neither handed over their progress nor left."""
        self.turn = asyncio.Lock()
        """Held by the member whose body runs on the connection."""
        self.items: list[_Commit] = []
        self.writes: Sequence[QueuedWrite] = ()
        """A lone member's queued writes, left for its progress write (see _Member.commit)."""
        self.ran = 0
        """Members whose bodies began on the connection."""
        self.failed = False
        self.conn: AsyncConnection | None = None
        self._txn: AbstractAsyncContextManager[AsyncConnection] | None = None
        self.outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._end: asyncio.Task[None] | None = None

    def joinable(self) -> bool:
        return (
            asyncio.get_running_loop() is self.loop
            and not self.failed
            and self._end is None
            and self.members < self.groups.size
            and self.loop.time() - self.born < WINDOW
        )

    async def open(self) -> AsyncConnection:
        if self.conn is None:
            txn = self.groups.opener()
            self.conn = await txn.__aenter__()
            self._txn = txn
        return self.conn

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0 and self._end is None:
            # Nobody is left to run: no one can join any more (joinable() says so) and the
            # group ends in a task of its own, which no member's cancellation can interrupt.
            self._end = asyncio.create_task(self._finish(), name="saga-step-group")
            self.groups.ending.add(self._end)
            self._end.add_done_callback(self.groups.ending.discard)

    async def _finish(self) -> None:
        self.groups.watch.record_group(self.members)
        try:
            outcome = await self._settle()
        except BaseException as error:  # cancelled at shutdown: the outcome is unknown
            outcome = DatabaseUnavailableError(f"the step group was interrupted: {error!r}")
        if not self.outcome.done():
            self.outcome.set_result(outcome)

    async def _settle(self) -> Outcome:
        if self.failed or not self.items:
            await self._rollback()
            return StepGroupAborted()
        assert self.conn is not None
        if len(self.items) == 1 and self.members == 1:
            return await self._settle_alone()
        try:
            written, shared = await self.groups.fast.commit_group_in(self.conn, self.items)
        except DatabaseUnavailableError as error:
            await self._rollback()
            return error
        except Exception:
            await self._rollback()
            return StepGroupAborted()
        if not shared:
            # Nothing was sent on the connection: each record committed (or was fenced) on
            # its own, and a fenced member finds out why alone.
            await self._rollback()
            return written
        if any(w is None for w in written):
            # A member was fenced off: commit no one; each learns its fate alone.
            await self._rollback()
            return StepGroupAborted()
        try:
            await self._close(None)
        except Exception as error:
            if is_database_unavailable(error):
                # The COMMIT's answer was lost: it may have committed.
                return unavailable(error, "step group commit")
            return StepGroupAborted()  # refused at COMMIT: nothing committed
        return written

    async def _settle_alone(self) -> Outcome:
        """A group of one commits as a lone step does: a fenced write is explained."""
        assert self.conn is not None
        try:
            committed = await self.groups.alone(self.conn, *self.items[0], self.writes)
            await self._close(None)
        except Exception as error:
            await self._rollback()
            if is_database_unavailable(error) and not isinstance(error, DatabaseUnavailableError):
                return unavailable(error, "step transaction")
            return error
        return committed

    async def _rollback(self) -> None:
        try:
            await self._close(_Abort())
        except _Abort:
            pass
        except Exception as error:  # a dead connection: the server rolled it back
            log.debug("rolling back a step group failed: %r", error)

    async def _close(self, abort: _Abort | None) -> None:
        txn, self._txn = self._txn, None
        if txn is None:
            return
        if abort is None:
            await txn.__aexit__(None, None, None)
        elif not await txn.__aexit__(_Abort, abort, None):
            raise abort


class _Member:
    def __init__(self, group: _Group, conn: AsyncConnection) -> None:
        self._group = group
        self._conn = conn
        self.done = False
        """Handed its progress over, or left the group."""

    @property
    def session(self) -> AsyncConnection:
        return self._conn

    def hand_over(self) -> None:
        if not self.done:
            self.done = True
            self._group.turn.release()
            self._group.leave()

    async def commit(
        self,
        run_id: str,
        epoch: int,
        progress: Progress,
        seq: int | None = None,
        writes: Sequence[QueuedWrite] = (),
    ) -> Committed:
        group = self._group
        if writes and not (group.members == 1 and group.active == 1 and group.groups.quiet()):
            # Before the next member's body runs: it must see them (else a write queued here
            # would overwrite what it read: a lost update). Under load this also keeps the
            # group open while they run, so the steps due meanwhile share its commit.
            await _run_member_writes(self._conn, writes)
        elif writes:
            # Alone, nothing else in flight, and once it leaves nobody can join (no await
            # from here to hand_over): its writes may go with its progress, one statement.
            group.writes = writes
        index = len(group.items)
        group.items.append((run_id, epoch, progress, seq))
        self.hand_over()
        outcome = await asyncio.shield(group.outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, Committed):
            return outcome
        written = outcome[index]
        if written is None:
            raise StepGroupAborted()
        return Committed.of(written)


async def _run_member_writes(conn: AsyncConnection, writes: Sequence[QueuedWrite]) -> None:
    """Run a member's queued writes on the group's connection, in order, in its transaction.

    Once the transaction is open (a statement was sent on it), a write that can be sent as it
    is goes straight to asyncpg (:func:`.pg_write.driver_sql`; a statement built per call
    only from its second use): no SQLAlchemy execution and no greenlet hop, which under load
    was a sixth of a step's CPU. The others, a write that would open the transaction, and
    any on a connection SQLAlchemy already gave up go through SQLAlchemy
    (:func:`.writes.run_writes`), which reports what is wrong as usual.

    Raises:
        StepGroupAborted: A write sent straight failed: the group rolls back and this attempt
            runs again alone, where a failing write fails it as usual (with SQLAlchemy's
            error, as the attempt's failure), and a write that only conflicted with another
            member's succeeds.
        QueuedWriteError: A write sent through SQLAlchemy failed (see run_writes).
        DatabaseUnavailableError: The connection failed under one.
    """
    import asyncpg  # the postgres extra: only its fast path makes groups

    for write in writes:
        live, direct = live_connection(conn), None
        driver = live.driver_connection if live is not None else None
        if isinstance(driver, asyncpg.Connection) and driver.is_in_transaction():
            direct = driver_sql(write, conn, compile_new=False)
        if direct is None or not isinstance(driver, asyncpg.Connection):
            await run_writes(conn, (write,))
            continue
        sql, args = direct
        try:
            await driver.execute(sql, *args)
        except Exception as error:
            # A timeout (asyncpg's command_timeout) is an OSError, but no lost connection, and
            # in the group's transaction nothing of it committed: the group rolls back. (A
            # statement sent alone may have landed: send_alone counts it as an outage.)
            lost = isinstance(error, OSError) and not isinstance(error, TimeoutError)
            if lost or driver_error_unavailable(error):
                await conn.invalidate(error)  # SQLAlchemy did not see it: tell its pool
                raise unavailable(error, "queued write") from None
            # Neither SQL nor values leave: the error is dropped, and the rerun reports it.
            raise StepGroupAborted() from None


class StepGroups:
    """Hands transactional steps a place in a shared transaction (see the module doc).

    Args:
        fast: The fast path that writes the group's progress on its connection.
        opener: Opens the group's write transaction.
        alone: Records a group of one the way a lone step's is.
        size: Most members per group (at least 2).
    """

    def __init__(self, fast: PgFastPath, opener: Opener, alone: Alone, size: int) -> None:
        if size < 2:
            raise ValueError(f"a step group needs room for 2 steps at least, not {size}")
        self.fast = fast
        self.opener = opener
        self.alone = alone
        self.size = size
        self._open: _Group | None = None
        self.ending: set[asyncio.Task[None]] = set()
        """Groups committing or rolling back now."""
        self.watch: GroupWatch = _Unwatched()
        """What the groups report (the engine's metrics replace it)."""

    async def close(self) -> None:
        """Wait for the groups that are ending (their commit or rollback) to end."""
        if self.ending:
            await asyncio.gather(*self.ending, return_exceptions=True)

    def quiet(self) -> bool:
        """Whether no group is ending and no progress write or start is in flight.

        A lone step's queued write goes with its progress in a statement of its own (one
        round trip, one commit), which is the cheapest for a run alone; when other runs are
        writing it is cheaper to run it in the group's transaction and let the steps due
        meanwhile join (one commit for all of them).
        """
        return not self.ending and self.fast.idle()

    @property
    def gathering(self) -> int:
        """Members of the group that still takes more (0 if none does)."""
        group = self._open
        return group.members if group is not None and group.joinable() else 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Member]:
        """A member's turn on a group's connection, until it hands over its progress."""
        group = self._open
        if group is None or not group.joinable():
            group = self._open = _Group(self)
        group.members += 1
        group.active += 1
        try:
            await group.turn.acquire()
        except BaseException:
            group.leave()
            raise
        member: _Member | None = None
        first = group.ran == 0
        try:
            if group.failed:
                raise StepGroupAborted()
            group.ran += 1
            member = _Member(group, await group.open())
            with sharing_transaction():
                yield member
        except BaseException as error:
            if member is None or not member.done:
                if member is not None or not isinstance(error, StepGroupAborted):
                    group.failed = True  # its body ran (or the group could not open)
                group.turn.release()
                group.leave()
                if member is not None and not isinstance(error, asyncio.CancelledError):
                    await asyncio.shield(group.outcome)  # its writes are undone first
                    if not first and isinstance(error, Exception):
                        # It saw the writes of the members before it, which are undone now:
                        # whether it fails is decided alone, on committed data only.
                        self.watch.record_group_rerun()
                        raise StepGroupAborted() from error
            if isinstance(error, StepGroupAborted):
                self.watch.record_group_rerun()
            raise
        if not member.done:  # the block ended without a commit: nothing of it may commit
            group.failed = True
            member.hand_over()
