"""MemoryStore: the store protocol in memory, with the SQL store's semantics.

Built for the test kit (:class:`cloudphone.saga.testing.MemoryEngine`): fencing epochs,
leases that expire by the clock, takeovers that count the lost attempt, gapless event
numbers, idempotency keys per saga type and atomic operator actions, as the contract suite
(``tests/integration/saga/test_store_contract.py``) checks for both stores. Everything lives
in one process and goes when it ends; every value crosses the store as JSON, as it would
through a database, so a caller never shares a mutable object with it.

Transactional steps write through an optional business database; see :mod:`.memory_txn`.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.errors import LeaseLostError, SagaNotFoundError
from cloudphone.saga.ports import Clock, Committed, StepTransaction
from cloudphone.saga.progress import NewEvent, OperatorChange, Progress
from cloudphone.saga.records import EventKind, SagaEvent, SagaRun
from cloudphone.saga.state import ACTIVE, SagaStatus
from cloudphone.saga.store import reconcile
from cloudphone.saga.store.base import (
    Claimed,
    ClaimRequest,
    NewRun,
    RunFilter,
    SagaTypes,
    WorkerPresence,
    type_matcher,
)
from cloudphone.saga.store.database import Database
from cloudphone.saga.store.memory_presence import MemoryPresence
from cloudphone.saga.store.memory_rows import Row, json_copy, row_filter, run_of, stored
from cloudphone.saga.store.memory_txn import DetachedStepTx, MemoryStepTx, on_outcome
from cloudphone.saga.store.rows import (
    event_from_row,
    event_rows,
    new_run_values,
    progress_values,
    start_detail,
)

_ACTIVE = frozenset(s.value for s in ACTIVE)


class _Subscription:
    def __init__(self, store: MemoryStore, on_notify: Callable[[str], None]) -> None:
        self._store = store
        self._on_notify = on_notify

    def start(self) -> None:
        self._store.subscribers.append(self._on_notify)

    async def stop(self) -> None:
        if self._on_notify in self._store.subscribers:
            self._store.subscribers.remove(self._on_notify)


class MemoryStore(MemoryPresence):
    """Saga runs and their history in memory: a :class:`~.base.SagaStore` without a database.

    Args:
        clock: Time source of leases (the engine's clock).
        lease: How long a claim or progress write keeps a run leased.
        db: Business database for transactional steps (``ctx.session``), if any.
    """

    def __init__(
        self, clock: Clock, lease: timedelta = timedelta(seconds=30), db: Database | None = None
    ) -> None:
        self._clock = clock
        self._lease = lease
        self._db = db
        self._runs: dict[str, Row] = {}
        self._events: dict[str, list[Row]] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._pending: set[str] = set()
        self._workers: dict[str, WorkerPresence] = {}  # see MemoryPresence
        self.lock = asyncio.Lock()
        """Serialises writes; a transactional step's commit holds it across its business commit."""
        self.subscribers: list[Callable[[str], None]] = []

    @property
    def lease(self) -> timedelta:
        """Lease length."""
        return self._lease

    @property
    def clock(self) -> Clock:
        """The clock that stamps leases."""
        return self._clock

    @property
    def db(self) -> Database | None:
        """The business database transactional steps write through, if any."""
        return self._db

    @property
    def announces(self) -> bool:
        """Always: inserts and operator actions call the subscribed workers of this process."""
        return True

    def subscribe(
        self,
        on_notify: Callable[[str], None],
        *,
        on_connect: Callable[[], None] | None = None,
        on_lost: Callable[[BaseException], None] | None = None,
    ) -> _Subscription:
        """Call ``on_notify(saga_type)`` when a run is announced (it is never cut off)."""
        return _Subscription(self, on_notify)

    async def create_schema(self) -> None:
        """Nothing to create."""

    async def close(self) -> None:
        """Nothing to release (the runs stay readable)."""

    # -- writes -------------------------------------------------------------------------

    async def insert_run(
        self, new: NewRun, session: AsyncConnection | None = None, /, notify: bool = False
    ) -> tuple[str, bool]:
        """Insert a run, or return the one holding its idempotency key.

        With ``session`` the run is invisible until that transaction commits and gone if it
        rolls back. A second start with the same key meanwhile gets the pending run's id.
        """
        async with self.lock:
            if new.idempotency_key is not None:
                existing = self._keys.get((new.saga_type, new.idempotency_key))
                if existing is not None:
                    return existing, False
            if session is not None:
                await on_outcome(
                    session, lambda: self._committed(new, notify), lambda: self._forget(new.id)
                )
                self._pending.add(new.id)
            self._insert(new)
            if session is None:
                self._announce(new.saga_type, notify)
            return new.id, True

    def _insert(self, new: NewRun) -> None:
        """Write a new run and its start event (call with :attr:`lock` held)."""
        self._runs[new.id] = stored(new_run_values(new, self._lease))
        if new.idempotency_key is not None:
            self._keys[(new.saga_type, new.idempotency_key)] = new.id
        started = NewEvent(EventKind.SAGA_STARTED, at=new.now, detail=start_detail(new))
        self._events[new.id] = stored(event_rows(new.id, 1, [started]))

    def _committed(self, new: NewRun, notify: bool) -> None:
        """The transaction that inserted ``new`` committed: it is visible now."""
        self._pending.discard(new.id)
        self._announce(new.saga_type, notify)

    def _forget(self, run_id: str) -> None:
        """Drop a run whose inserting transaction rolled back."""
        self._pending.discard(run_id)
        row = self._runs.pop(run_id, None)
        self._events.pop(run_id, None)
        if row is not None and row["idempotency_key"] is not None:
            self._keys.pop((row["saga_type"], row["idempotency_key"]), None)

    def _announce(self, saga_type: str, notify: bool) -> None:
        if notify:
            for on_notify in list(self.subscribers):
                on_notify(saga_type)

    async def commit(
        self, run_id: str, epoch: int, progress: Progress, seq: int | None = None
    ) -> Committed:
        """Record progress, fenced by ``epoch`` (and ``seq``); see :mod:`.reconcile`."""

        async def write(at: int | None) -> tuple[bool, int] | None:
            row = self._visible(run_id)
            if row is None or row["epoch"] != epoch or at not in (None, row["last_seq"]):
                return None
            committed = self.apply(run_id, epoch, progress)
            return committed.cancel_requested, committed.last_seq

        async with self.lock:
            return await reconcile.write_fenced(write, self._look, run_id, epoch, progress, seq)

    async def landed(
        self, run_id: str, epoch: int, seq: int, progress: Progress | None
    ) -> Committed | None:
        """Whether a write after ``seq`` landed (see :func:`.reconcile.landed`)."""
        return reconcile.landed(await self._look(run_id, seq), run_id, epoch, progress)

    async def _look(self, run_id: str, seq: int) -> reconcile.Look | None:
        row = self._visible(run_id)
        if row is None:
            return None
        after = [e for e in self._events[run_id] if e["seq"] > seq]
        return reconcile.look_of(row, after)

    def check_held(self, run_id: str, epoch: int, seq: int | None = None) -> Row:
        """The run's row if ``epoch`` (and ``seq``, past cancel requests) is current.

        Raises:
            LeaseLostError: The epoch moved.
            StaleStateError: Another write of this epoch came after ``seq``.
        """
        row = self._visible(run_id)
        if row is None or row["epoch"] != epoch:
            raise LeaseLostError(f"run {run_id} is no longer held at epoch {epoch}")
        if seq is not None and row["last_seq"] != seq:
            after = [e for e in self._events[run_id] if e["seq"] > seq]
            reconcile.landed(reconcile.look_of(row, after), run_id, epoch, None)
        return row

    def apply(self, run_id: str, epoch: int, progress: Progress) -> Committed:
        """Write a Progress and its events (call with :attr:`lock` held)."""
        row = self.check_held(run_id, epoch)
        row.update(stored(progress_values(progress, self._clock.now() + self._lease)))
        for step, output in (progress.outputs_patch() or {}).items():
            row["outputs"][step] = json_copy(output)
        if not progress.keep_lease:
            row["owner"] = None
        row["cancel_requested"] = row["cancel_requested"] and not progress.clear_cancel
        self._append(row, progress.events)
        return Committed(cancel_requested=row["cancel_requested"], last_seq=row["last_seq"])

    def _append(self, row: Row, events: Sequence[NewEvent]) -> None:
        first = row["last_seq"] + 1
        self._events[row["id"]].extend(stored(event_rows(row["id"], first, list(events))))
        row["last_seq"] += len(events)

    def first_step_inserts(self) -> None:
        """Never: a run is inserted before its first step runs."""

    @asynccontextmanager
    async def step_transaction(self, alone: bool = False) -> AsyncIterator[StepTransaction]:
        """A business transaction for a transactional step (see :mod:`.memory_txn`).

        Never shared with another run's step (``alone`` or not).
        """
        if self._db is None:
            yield DetachedStepTx(self)
            return
        async with self._db.begin() as conn:
            yield MemoryStepTx(self, conn)

    # -- claims and leases --------------------------------------------------------------

    async def claim(self, request: ClaimRequest) -> list[Claimed]:
        """Lease due runs, oldest ``next_run_at`` first; a takeover counts the lost attempt.

        Leases that expired before ``takeover_before`` (default ``now``) are taken over; in
        memory no claim's answer is lost, so ``lost_claims`` is moot.
        """
        r = request
        if r.limit <= 0 or not r.saga_types:
            return []
        async with self.lock:
            due = sorted(
                self._claimable(r.saga_types, r.now, r.own, r.exclude, r.before),
                key=lambda row: (row["next_run_at"], row["created_at"], row["id"]),
            )
            return [self._claim(row, r.worker_id, r.now) for row in due[: r.limit]]

    def _claim(self, row: Row, worker_id: str, now: datetime) -> Claimed:
        previous = row["owner"]
        row.update(
            owner=worker_id,
            epoch=row["epoch"] + 1,
            lease_expires_at=self._clock.now() + self._lease,
            updated_at=now,
        )
        if row["status"] == SagaStatus.PENDING.value:
            row["status"] = SagaStatus.RUNNING.value
        if previous is not None:
            row["attempt"] += 1
            detail = {"previous_owner": previous, "worker": worker_id}
            takeover = NewEvent(
                EventKind.LEASE_TAKEOVER,
                at=now,
                step=row["current_step"],
                attempt=row["attempt"],
                detail=detail,
            )
            self._append(row, [takeover])
        return Claimed(run_of(row), previous)

    def _claimable(
        self,
        saga_types: SagaTypes,
        now: datetime,
        own: str | None,
        exclude: Sequence[str],
        takeover_before: datetime | None = None,
    ) -> Iterator[Row]:
        skip, before = set(exclude), takeover_before or now
        for row in self._active(saga_types):
            expired = row["lease_expires_at"] is not None and row["lease_expires_at"] < before
            free = row["owner"] is None or expired or (own is not None and row["owner"] == own)
            due = row["next_run_at"] is not None and row["next_run_at"] <= now
            if free and due and row["id"] not in skip:
                yield row

    def claimable(self, saga_types: SagaTypes, now: datetime, exclude: Sequence[str]) -> bool:
        """Whether a claim at ``now`` would find a run (the test kit's idle check)."""
        return any(True for _ in self._claimable(saga_types, now, None, exclude))

    async def heartbeat(
        self, worker_id: str, run_ids: Sequence[str]
    ) -> dict[str, tuple[int, bool]]:
        """Extend the leases this worker still holds."""
        if not run_ids:
            return {}
        async with self.lock:
            held: dict[str, tuple[int, bool]] = {}
            for row in self._owned(worker_id, run_ids):
                row["lease_expires_at"] = self._clock.now() + self._lease
                held[row["id"]] = (row["epoch"], row["cancel_requested"])
            return held

    async def release(self, worker_id: str, run_ids: Sequence[str], now: datetime) -> int:
        """Hand runs back: due now for any worker; the epoch bump fences the old owner off."""
        async with self.lock:
            rows = list(self._owned(worker_id, run_ids))
            for row in rows:
                row.update(
                    owner=None,
                    lease_expires_at=None,
                    next_run_at=now,
                    epoch=row["epoch"] + 1,
                    updated_at=now,
                )
            return len(rows)

    def _owned(self, worker_id: str, run_ids: Sequence[str]) -> Iterator[Row]:
        for run_id in dict.fromkeys(run_ids):
            row = self._visible(run_id)
            if row is not None and row["owner"] == worker_id and row["status"] in _ACTIVE:
                yield row

    def abandon(self, run_id: str, owner: str) -> datetime | None:
        """Test kit: ``owner``, a worker that died, holds the run; returns when its lease ends."""
        row = self._visible(run_id)
        if row is None:
            raise SagaNotFoundError(f"no saga run {run_id!r}")
        row["owner"] = owner
        expires: datetime | None = row["lease_expires_at"]
        return expires

    async def next_due(self, saga_types: SagaTypes) -> datetime | None:
        """Earliest time an unowned active run of these types (and versions) becomes due."""
        times = [
            row["next_run_at"]
            for row in self._active(saga_types)
            if row["owner"] is None and row["next_run_at"] is not None
        ]
        return min(times, default=None)

    # -- operator actions ---------------------------------------------------------------

    async def operate(
        self,
        run_id: str,
        decide: Callable[[SagaRun], OperatorChange],
        notify: bool = False,
        spawn: NewRun | None = None,
    ) -> SagaRun:
        """Apply an operator action atomically: decide on the run, write, append events.

        ``spawn`` (a fork) is inserted with it, once ``decide`` accepted.
        """
        async with self.lock:
            row = self._visible(run_id)
            if row is None:
                raise SagaNotFoundError(f"no saga run {run_id!r}")
            change = decide(run_of(row))
            unknown = set(change.values) - set(row)
            if unknown:
                raise ValueError(f"operator change sets unknown columns {sorted(unknown)}")
            row.update(stored(change.values))
            if change.bump_epoch:
                row["epoch"] += 1
            self._append(row, change.events)
            self._announce(row["saga_type"], notify and change.bump_epoch)
            if spawn is not None:
                self._insert(spawn)
                self._announce(spawn.saga_type, notify)
            return run_of(row)

    # -- reads --------------------------------------------------------------------------

    def _visible(self, run_id: str) -> Row | None:
        return None if run_id in self._pending else self._runs.get(run_id)

    def _active(self, saga_types: SagaTypes | None = None) -> Iterator[Row]:
        """Active visible runs (of ``saga_types`` only, when given)."""
        covers = type_matcher(saga_types) if saga_types is not None else None
        for run_id, row in self._runs.items():
            if row["status"] not in _ACTIVE or run_id in self._pending:
                continue
            if covers is None or covers(row["saga_type"], row["saga_version"]):
                yield row

    async def get(self, run_id: str) -> SagaRun | None:
        """The run, or None."""
        row = self._visible(run_id)
        return run_of(row) if row is not None else None

    async def count_needs_attention(self) -> dict[str, int]:
        """FAILED, unresolved runs per saga type."""
        counts: dict[str, int] = {}
        for run_id, row in self._runs.items():
            failed = row["status"] == SagaStatus.FAILED.value and row["resolution"] is None
            if failed and run_id not in self._pending:
                counts[row["saga_type"]] = counts.get(row["saga_type"], 0) + 1
        return counts

    async def find(self, saga_type: str, idempotency_key: str) -> SagaRun | None:
        """The run of ``saga_type`` holding ``idempotency_key``, or None."""
        run_id = self._keys.get((saga_type, idempotency_key))
        return await self.get(run_id) if run_id is not None else None

    async def history(self, run_id: str) -> list[SagaEvent]:
        """Every event of the run, in order."""
        if self._visible(run_id) is None:
            return []
        return [event_from_row(copy.deepcopy(e)) for e in self._events[run_id]]

    async def list_runs(
        self, where: RunFilter, *, limit: int = 50, offset: int = 0
    ) -> list[SagaRun]:
        """Runs matching ``where``, newest first."""
        orphans = None
        if where.orphaned:
            orphans = {r["id"] for r in self._orphans(await self.live_workers())}
        check = row_filter(where, orphans)
        rows = [
            row for run_id, row in self._runs.items() if run_id not in self._pending and check(row)
        ]
        rows.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        return [run_of(row) for row in rows[offset : offset + limit]]
