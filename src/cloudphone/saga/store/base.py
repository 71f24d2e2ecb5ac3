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
  nothing, a different one of the same epoch raises StaleStateError (see ``store/reconcile``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.ports import Clock, ProgressStore
from cloudphone.saga.progress import OperatorChange
from cloudphone.saga.records import SagaEvent, SagaRun
from cloudphone.saga.state import SagaStatus
from cloudphone.saga.store.database import Database


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


class SagaStore(ProgressStore, Protocol):
    """Runs, their leases and their history: the one port between the engine and storage."""

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

    async def claim(
        self,
        worker_id: str,
        limit: int,
        saga_types: Sequence[str],
        now: datetime,
        reclaim_own: bool = False,
        exclude: Sequence[str] = (),
        takeover_before: datetime | None = None,
        lost_claims: Sequence[datetime] = (),
    ) -> list[Claimed]:
        """Lease up to ``limit`` due runs: unowned, lease expired, or (``reclaim_own``) ours.

        Runs in ``exclude`` (the caller drives them) are never claimed. Only leases that
        expired before ``takeover_before`` (default ``now``) are taken over. ``lost_claims``:
        times of this worker's claims whose answer was lost; the runs they took, untouched
        since, are claimed again as fresh (a store whose answers cannot be lost ignores it).
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
        self, run_id: str, decide: Callable[[SagaRun], OperatorChange], notify: bool = False
    ) -> SagaRun:
        """Apply an operator action atomically: read the run, decide, write it and its events.

        Raises:
            SagaNotFoundError: No such run.
        """
        ...

    # -- reads --------------------------------------------------------------------------

    async def next_due(self, saga_types: Sequence[str]) -> datetime | None:
        """Earliest ``next_run_at`` of an unowned active run of these types."""
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
    ) -> list[SagaRun]:
        """Runs matching every given filter, newest first (``created_at``, then ``id``).

        ``ids`` limits the answer to those runs (a business-id search's hits).
        """
        ...
