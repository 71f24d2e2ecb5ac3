"""After a progress write matched no row, or its answer was lost: what does the run say?

Every runner write is fenced by the run's epoch and by the ``last_seq`` the runner last saw.
When such a write applies to no row, or its connection died so its outcome is unknown, the
stored run tells which of these happened:

- its epoch moved: another worker or an operator owns the run now (lease lost);
- events after the runner's ``last_seq`` that only this epoch's owner writes (anything but an
  operator's ``cancel_requested``): the write landed; if it is this very progress, it counts
  as committed, else an earlier lost write landed late and the runner's copy is stale;
- only an operator's cancel request moved ``last_seq``: write again after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.errors import LeaseLostError, StaleStateError
from cloudphone.saga.ports import Committed
from cloudphone.saga.progress import Progress
from cloudphone.saga.records import EventKind
from cloudphone.saga.store.tables import saga_events, saga_runs

EventKey = tuple[str, str | None, int | None, datetime]
"""What identifies a written event: kind, step, attempt and time (to the microsecond)."""

MOVES = 4
"""Tries of one write that an operator's cancel request may push back (it moves last_seq)."""


@dataclass(frozen=True)
class Look:
    """The run as stored, and the owner's events after the runner's ``last_seq``."""

    epoch: int
    last_seq: int
    cancel_requested: bool
    owner_events: tuple[EventKey, ...]


Looker = Callable[[str, int], Awaitable["Look | None"]]
"""Reads a run's :class:`Look` after a seq (in the writer's transaction, or one of its own)."""
Write = Callable[[int | None], Awaitable[tuple[bool, int] | None]]
"""Sends the progress fenced at a seq: (cancel_requested, new last_seq), None if no row."""


async def write_fenced(
    write: Write,
    look: Looker,
    run_id: str,
    epoch: int,
    progress: Progress,
    seq: int | None,
    *,
    in_transaction: bool = False,
) -> Committed:
    """Send the write; if it matches no row, let the stored run say why (see module doc).

    ``in_transaction``: the write shares a transaction with business writes. A write of this
    epoch found after ``seq`` then came from an earlier transaction, never from this one
    (uncommitted): StaleStateError, so that this transaction rolls back.

    Raises:
        LeaseLostError: Fenced off by the epoch (or, without ``seq``, by anything).
        StaleStateError: A different write of this epoch landed at ``seq``.
    """
    for _ in range(MOVES):
        written = await write(seq)
        if written is not None:
            return Committed.of(written)
        if seq is None:
            break
        seen = await look(run_id, seq)
        committed = landed(seen, run_id, epoch, None if in_transaction else progress)
        if committed is not None:
            return committed  # a repeat of a write whose answer was lost
        assert seen is not None  # landed() raised LeaseLostError otherwise
        seq = seen.last_seq  # only an operator's cancel request moved it: write after it
    raise LeaseLostError(f"run {run_id} is no longer held at epoch {epoch}")


def look_of(run: Mapping[Any, Any], events_after: Iterable[Mapping[Any, Any]]) -> Look:
    """A Look from a run's row and its event rows after the seq in question."""
    return Look(
        epoch=run["epoch"],
        last_seq=run["last_seq"],
        cancel_requested=bool(run["cancel_requested"]),
        owner_events=tuple(
            (e["kind"], e["step"], e["attempt"], e["at"])
            for e in events_after
            if e["kind"] != EventKind.CANCEL_REQUESTED.value
        ),
    )


async def look_txn(conn: AsyncConnection, run_id: str, after_seq: int) -> Look | None:
    """Read the run's fencing state and its events after ``after_seq`` (None: no such run)."""
    r, e = saga_runs.c, saga_events.c
    row = (
        await conn.execute(select(r.epoch, r.last_seq, r.cancel_requested).where(r.id == run_id))
    ).first()
    if row is None:
        return None
    events = await conn.execute(
        select(e.kind, e.step, e.attempt, e.at)
        .where(e.saga_id == run_id, e.seq > after_seq)
        .order_by(e.seq)
    )
    return look_of(row._mapping, (ev._mapping for ev in events))


def landed(
    look: Look | None, run_id: str, epoch: int, progress: Progress | None
) -> Committed | None:
    """Committed if ``progress`` (or a write like it) landed; None if nothing did.

    Raises:
        LeaseLostError: The run is gone or its epoch moved.
        StaleStateError: A different write of this epoch landed (a lost one, late).
    """
    if look is None or look.epoch != epoch:
        raise LeaseLostError(f"run {run_id} is no longer held at epoch {epoch}")
    if not look.owner_events:
        return None
    if progress is not None and progress.events and look.owner_events[0] == _key(progress):
        return Committed(cancel_requested=look.cancel_requested, last_seq=look.last_seq)
    raise StaleStateError(f"run {run_id} has progress at epoch {epoch} that this runner lost")


def _key(progress: Progress) -> EventKey:
    first = progress.events[0]
    return (first.kind.value, first.step, first.attempt, first.at)
