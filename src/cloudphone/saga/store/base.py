"""The store protocol: every operation the worker, the runner and the engine need.

Two implementations: :class:`~cloudphone.saga.store.sql.SqlStore` (SQLite and PostgreSQL) and
:class:`~cloudphone.saga.store.memory.MemoryStore` (in memory, for the test kit). Both pass one
contract suite (``tests/integration/saga/test_store_contract.py``), which pins the semantics
this module only names:

- every claim and operator fence bumps a run's ``epoch``; a progress write at an older epoch
  raises :class:`~cloudphone.saga.errors.LeaseLostError` and changes nothing;
- a claim of a run whose owner's lease expired (or, with ``reclaim_own``, of one's own) is a
  takeover: it counts the lost attempt and appends a ``lease_takeover`` event;
- events are numbered per run from 1 without gaps; an idempotency key is unique per saga type;
- a progress write given ``seq`` applies only while the run's ``last_seq`` is still that (past
  an operator's cancel request): a repeat of one that landed answers Committed and writes
  nothing, a different one of the same epoch raises StaleStateError (see ``store/reconcile``);
- a run is pinned to its ``saga_version``; claims and ``next_due`` cover only the (type,
  version) pairs asked for (a bare name: every version of it);
- a worker's presence counts as live for :data:`LIVE_LEASES` leases after its last refresh; a
  run is orphaned while it is active and no live worker lists its (type, version)
  (part 3 of the suite: ``test_store_contract_versions.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.definition import SagaKey
from cloudphone.saga.ports import Clock, Committed, ProgressStore, StepTransaction
from cloudphone.saga.progress import OperatorChange, Progress
from cloudphone.saga.records import SagaEvent, SagaRun
from cloudphone.saga.state import SagaStatus
from cloudphone.saga.store.database import Database

SagaTypes = Sequence[str | SagaKey]
"""What a worker drives: ``(name, version)`` pairs; a bare name stands for every version."""


def split_types(saga_types: SagaTypes) -> tuple[list[str], list[SagaKey]]:
    """The bare names (every version) and the ``(name, version)`` pairs of ``saga_types``."""
    names = [t for t in saga_types if isinstance(t, str)]
    pairs = [(t[0], int(t[1])) for t in saga_types if not isinstance(t, str)]
    return names, pairs


def type_matcher(saga_types: SagaTypes) -> Callable[[str, int], bool]:
    """A predicate on (saga_type, saga_version): whether ``saga_types`` covers it."""
    names, pairs = split_types(saga_types)
    any_version, exact = set(names), set(pairs)
    return lambda name, version: name in any_version or (name, version) in exact


@dataclass(frozen=True)
class WorkerPresence:
    """A live worker as ``saga_workers`` lists it: who it is and what it can drive."""

    worker_id: str
    sagas: tuple[SagaKey, ...]
    """The (saga type, version) pairs it claims."""
    started_at: datetime
    heartbeat_at: datetime
    """Last refresh; it counts as live while this is within :data:`LIVE_LEASES` leases."""
    host: str
    pid: int


LIVE_LEASES = 2
"""A worker is live while its presence was refreshed within this many leases (it refreshes
about once per lease, so one missed refresh is tolerated)."""


@dataclass(frozen=True)
class NewRun:
    """A run to insert."""

    id: str
    saga_type: str
    data: dict[str, Any]
    first_step: str
    idempotency_key: str | None
    started_by: str | None
    deadline_at: datetime | None
    now: datetime
    owner: str | None = None
    """Claim it for this worker in the same insert (the process has a worker with room)."""
    trace_context: dict[str, str] | None = None
    """W3C trace context of the start, stored with the run."""
    saga_version: int = 1
    """Version of the definition the run is pinned to."""
    forked_from: str | None = None
    """The run this one is a fork of."""
    detail: Mapping[str, Any] | None = None
    """More facts for its ``saga_started`` event (a fork's origin)."""
    outputs: Mapping[str, Any] | None = None
    """Outputs it starts with, by step (a fork's, of the steps it does not run again)."""


@dataclass(frozen=True)
class RunFilter:
    """Which runs a listing returns: those matching every filter given (the defaults: any)."""

    status: SagaStatus | None = None
    saga_type: str | None = None
    started_by: str | None = None
    created_after: datetime | None = None
    """Created at or after this time."""
    created_before: datetime | None = None
    """Created strictly before this time."""
    needs_attention: bool = False
    """Only FAILED runs no operator has resolved."""
    ids: frozenset[str] | None = None
    """Only these runs (a business-id search's hits)."""
    orphaned: bool = False
    """Only active runs whose (type, version) no live worker drives."""
    forked_from: str | None = None
    """Only the forks of that run."""


@dataclass(frozen=True)
class ClaimRequest:
    """One claim round of a worker: which due runs it may lease, and how many."""

    worker_id: str
    limit: int
    """Most runs to lease (none for 0 or less)."""
    saga_types: SagaTypes
    """The (type, version) pairs it drives; a bare name stands for every version."""
    now: datetime
    """When the round runs: runs due by then are claimed."""
    reclaim_own: bool = False
    """Claim runs this worker already holds too (after a restart with the same id)."""
    exclude: Sequence[str] = ()
    """Runs the caller is driving: never claimed, even if their leases lapsed."""
    takeover_before: datetime | None = None
    """Only leases that expired before this (default ``now``) are taken over."""
    lost_claims: Sequence[datetime] = ()
    """Times of this worker's claims whose answer was lost: the runs they took, untouched
    since, are claimed again as fresh (a store whose answers cannot be lost ignores it)."""

    @property
    def before(self) -> datetime:
        """When a lease must have expired for a takeover: ``takeover_before`` or ``now``."""
        return self.takeover_before or self.now

    @property
    def own(self) -> str | None:
        """The owner whose leases count as free (``reclaim_own``): this worker, or None."""
        return self.worker_id if self.reclaim_own else None


@dataclass(frozen=True)
class Claimed:
    """A run a worker just claimed."""

    run: SagaRun
    previous_owner: str | None
    """Whose expired lease was taken over (None for a fresh claim)."""


class Subscription(Protocol):
    """Announcements of new and resumed runs made by other processes (PostgreSQL NOTIFY)."""

    def start(self) -> None:
        """Start listening in the background."""
        ...

    async def stop(self) -> None:
        """Stop listening."""
        ...


TakeInsert = Callable[[], Awaitable["NewRun | None"]]
"""Takes a deferred run's insert for a commit to write: the run, or None if it was written."""


class FirstStepInserts(Protocol):
    """A store's way to insert a new run with its first step's commit (see ``saga/pending``)."""

    def first_step_transaction(
        self, take: TakeInsert
    ) -> AbstractAsyncContextManager[StepTransaction]:
        """A transaction of its own for a deferred run's first step.

        Its commit takes the run's insert (``take``) and writes it with the step's progress,
        or, if the run was inserted meanwhile, records the progress as for any run. The
        commit is given the run's id, epoch 1 and ``last_seq`` 1 (the run as inserted).
        """
        ...

    async def inserted(self, new: NewRun, progress: Progress | None) -> Committed | None:
        """After a lost answer: whether ``new`` was inserted with ``progress`` (None: not)."""
        ...


class SagaStore(ProgressStore, Protocol):
    """Runs, their leases and their history: the one port between the engine and storage."""

    def first_step_inserts(self) -> FirstStepInserts | None:
        """How to insert a run with its first step's commit, if this store can right now.

        Only when that is cheaper than an insert of its own (PostgreSQL, while nothing else
        of the process is being written: under load the inserts are grouped instead).
        """
        ...

    @property
    def lease(self) -> timedelta:
        """How long a claim or a progress write that keeps the lease holds a run."""
        ...

    @property
    def clock(self) -> Clock:
        """The time source that stamps leases."""
        ...

    @property
    def db(self) -> Database | None:
        """The database transactional steps write through (``ctx.session``), if any."""
        ...

    @property
    def announces(self) -> bool:
        """Whether inserts and operator actions can announce work to subscribed workers.

        When true the engine asks for announcements (``notify=True``) and subscribes its
        worker; when false it wakes its own worker and others poll.
        """
        ...

    async def create_schema(self) -> None:
        """Create what the store needs if missing (tables; nothing in memory)."""
        ...

    async def close(self) -> None:
        """Finish queued writes and release connections."""
        ...

    def subscribe(
        self,
        on_notify: Callable[[str], None],
        *,
        on_connect: Callable[[], None] | None = None,
        on_lost: Callable[[BaseException], None] | None = None,
    ) -> Subscription | None:
        """A subscription calling ``on_notify(saga_type)`` on announced work, if supported.

        ``on_connect`` is called each time it starts listening (announcements made while it
        was disconnected are lost: look for work then), ``on_lost`` when it is cut off.
        """
        ...

    # -- writes -------------------------------------------------------------------------

    async def insert_run(
        self, new: NewRun, session: AsyncConnection | None = None, /, notify: bool = False
    ) -> tuple[str, bool]:
        """Insert a run, or find the one holding its (saga_type, idempotency_key).

        Args:
            new: The run.
            session: The caller's open transaction: the run exists only once it commits.
            notify: Announce the run to subscribed workers when it becomes visible.

        Returns:
            The run id and whether this call inserted it.
        """
        ...

    async def claim(self, request: ClaimRequest) -> list[Claimed]:
        """Lease up to ``limit`` due runs: unowned, lease expired, or (``reclaim_own``) ours.

        Only runs whose (type, version) ``saga_types`` covers are claimed, never those in
        ``exclude``; see :class:`ClaimRequest` for ``takeover_before`` and ``lost_claims``.
        """
        ...

    async def heartbeat(
        self, worker_id: str, run_ids: Sequence[str]
    ) -> dict[str, tuple[int, bool]]:
        """Extend the leases this worker still holds: epoch and cancel flag per held run."""
        ...

    async def release(self, worker_id: str, run_ids: Sequence[str], now: datetime) -> int:
        """Hand held runs back, due now for any worker (the epoch bump fences us off)."""
        ...

    async def operate(
        self,
        run_id: str,
        decide: Callable[[SagaRun], OperatorChange],
        notify: bool = False,
        spawn: NewRun | None = None,
    ) -> SagaRun:
        """Apply an operator action atomically: read the run, decide, write it and its events.

        ``spawn`` (a fork) is inserted in the same transaction once ``decide`` accepted, and
        announced with ``notify``; nothing is written when ``decide`` raises.

        Raises:
            SagaNotFoundError: No such run.
        """
        ...

    # -- worker presence ----------------------------------------------------------------

    async def announce_presence(self, presence: WorkerPresence) -> None:
        """Record (or refresh) a worker as live with the (type, version) pairs it drives."""
        ...

    async def withdraw_presence(self, worker_id: str) -> None:
        """Forget a worker that stopped gracefully (its runs may now be orphaned)."""
        ...

    async def live_workers(self) -> list[WorkerPresence]:
        """The workers refreshed within :data:`LIVE_LEASES` leases, by worker id."""
        ...

    async def count_orphaned(self) -> dict[SagaKey, int]:
        """Active runs per (type, version) that no live worker drives (one query)."""
        ...

    # -- reads --------------------------------------------------------------------------

    async def next_due(self, saga_types: SagaTypes) -> datetime | None:
        """Earliest ``next_run_at`` of an unowned active run of these types (and versions)."""
        ...

    async def get(self, run_id: str) -> SagaRun | None:
        """The run, or None."""
        ...

    async def count_needs_attention(self) -> dict[str, int]:
        """FAILED runs no operator has resolved, per saga type (types with none are left out).

        One grouped count over every type (the ``saga_needs_attention`` gauge).
        """
        ...

    async def find(self, saga_type: str, idempotency_key: str) -> SagaRun | None:
        """The run of ``saga_type`` holding ``idempotency_key``, or None."""
        ...

    async def history(self, run_id: str) -> list[SagaEvent]:
        """Every event of the run, in order (empty for an unknown run)."""
        ...

    async def list_runs(
        self, where: RunFilter, *, limit: int = 50, offset: int = 0
    ) -> list[SagaRun]:
        """Runs matching ``where``, newest first (``created_at``, then ``id``)."""
        ...
