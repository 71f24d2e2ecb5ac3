"""A saga for crash tests, importable by worker child processes, and its business table.

Its transactional steps insert one row each into ``chaos_effects`` through ``ctx.session``, in
the same transaction as the engine's progress write. The table has no unique constraint on
purpose: a test counts the rows, so a step that took effect twice shows up as two rows.

A :class:`Gate` makes one step block (inside its transaction, after its row is inserted) until
the test releases it, so a test can SIGKILL the worker mid-step deterministically.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cloudphone.saga import Database, RetryPolicy, Saga, StepContext
from cloudphone.saga.store.tables import metadata as saga_metadata
from tests.support.waiting import eventually

STEPS = ("RESERVE", "CALL", "RECORD", "NOTIFY")
"""The chaos saga's steps, in order."""

TRANSACTIONAL_STEPS = ("RESERVE", "RECORD")
"""Steps that write a ``chaos_effects`` row in the engine's progress transaction."""

CHAOS_RETRY = RetryPolicy(
    max_attempts=50,
    initial_interval=timedelta(milliseconds=10),
    max_interval=timedelta(milliseconds=100),
    jitter=False,
)
"""Every takeover counts an attempt; leave room for many kills of the same step."""

business_metadata = sa.MetaData()

chaos_effects = sa.Table(
    "chaos_effects",
    business_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("saga_id", sa.String(36), nullable=False, index=True),
    sa.Column("step", sa.String(100), nullable=False),
    sa.Column("worker_id", sa.String(200), nullable=False),
)
"""One row per committed transactional step (no unique constraint: tests count rows)."""


@dataclass(frozen=True)
class Gate:
    """Blocks one step of a run until the test releases it.

    The gated step writes ``started`` (worker id and attempt, as JSON) when it reaches the gate,
    then polls for ``release``. In a transactional step the gate comes after the row insert, so
    a kill at the gate leaves an uncommitted business write behind.
    """

    step: str
    started: Path
    release_file: Path

    @classmethod
    def in_dir(cls, directory: Path, step: str) -> Gate:
        """A gate on ``step`` whose marker files live in ``directory``."""
        return cls(step, directory / f"{step}.started", directory / f"{step}.release")

    def data(self) -> dict[str, Any]:
        """The saga data entry that arms this gate."""
        return {
            "gate": {
                "step": self.step,
                "started": str(self.started),
                "release": str(self.release_file),
            }
        }

    async def wait_started(self, *, within: float = 15.0) -> dict[str, Any]:
        """Wait until a worker is blocked at the gate; returns its worker id and attempt."""

        async def probe() -> str | None:
            return self.started.read_text() if self.started.exists() else None

        text = await eventually(
            probe, lambda t: bool(t), timeout=within, what=f"{self.step} reached its gate"
        )
        assert text is not None
        marker: dict[str, Any] = json.loads(text)
        return marker

    def release(self) -> None:
        """Let the gated step (and every later attempt of it) through."""
        self.release_file.touch()


async def _pass_gate(ctx: StepContext, worker_id: str) -> None:
    gate = ctx.data.get("gate")
    if not gate or gate["step"] != ctx.step:
        return
    _mark_started(Path(gate["started"]), worker_id, ctx.attempt)
    release = Path(gate["release"])
    while not _exists(release):  # noqa: ASYNC110 - set by another process: no event to await
        await asyncio.sleep(0.01)


def _mark_started(started: Path, worker_id: str, attempt: int) -> None:
    tmp = started.with_suffix(".tmp")
    tmp.write_text(json.dumps({"worker_id": worker_id, "attempt": attempt}))
    tmp.replace(started)  # atomic: the test never reads a half-written marker


def _exists(path: Path) -> bool:
    return path.exists()


async def _work(ctx: StepContext) -> None:
    """Simulated time spent talking to the outside world, so kills land mid-step."""
    work_ms = ctx.data.get("work_ms", 0)
    if work_ms:
        await asyncio.sleep(work_ms / 1000)


def build_chaos_saga(name: str, worker_id: str = "starter") -> Saga:
    """The chaos saga: RESERVE (tx) → CALL → RECORD (tx) → NOTIFY, no pivot.

    Args:
        name: Saga name, unique per test.
        worker_id: Written into every ``chaos_effects`` row this process commits.
    """
    saga = Saga(name, retry=CHAOS_RETRY)

    async def effect(ctx: StepContext) -> dict[str, Any]:
        await ctx.session.execute(
            sa.insert(chaos_effects).values(saga_id=ctx.saga_id, step=ctx.step, worker_id=worker_id)
        )
        await _pass_gate(ctx, worker_id)
        await _work(ctx)
        return {ctx.step: worker_id}

    async def call(ctx: StepContext) -> dict[str, Any]:
        await _pass_gate(ctx, worker_id)
        await _work(ctx)
        return {"call_key": ctx.idempotency_key}

    async def notify(ctx: StepContext) -> None:
        await _pass_gate(ctx, worker_id)
        await _work(ctx)

    saga.step("RESERVE", transactional=True)(effect)
    saga.step("CALL")(call)
    saga.step("RECORD", transactional=True)(effect)
    saga.step("NOTIFY")(notify)
    return saga


async def create_chaos_schema(db: Database) -> None:
    """Create the engine's tables and ``chaos_effects`` (SQLite or PostgreSQL), if missing."""
    async with db.begin() as conn:
        await conn.run_sync(saga_metadata.create_all)
        await conn.run_sync(business_metadata.create_all)


async def count_effects(db: Database, saga_ids: Iterable[str]) -> Counter[tuple[str, str]]:
    """Rows of ``chaos_effects`` per (saga_id, step) for these runs."""
    ids = list(saga_ids)
    stmt = (
        sa.select(chaos_effects.c.saga_id, chaos_effects.c.step, sa.func.count())
        .where(chaos_effects.c.saga_id.in_(ids))
        .group_by(chaos_effects.c.saga_id, chaos_effects.c.step)
    )
    async with db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    return Counter({(saga_id, step): int(n) for saga_id, step, n in rows})


async def effect_writers(db: Database, saga_id: str) -> dict[str, list[str]]:
    """For one run: which worker ids committed a row, per step."""
    stmt = (
        sa.select(chaos_effects.c.step, chaos_effects.c.worker_id)
        .where(chaos_effects.c.saga_id == saga_id)
        .order_by(chaos_effects.c.id)
    )
    async with db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    writers: dict[str, list[str]] = {}
    for step, worker in rows:
        writers.setdefault(step, []).append(worker)
    return writers
