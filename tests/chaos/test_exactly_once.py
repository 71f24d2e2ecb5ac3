"""Competing worker processes SIGKILLed at random: every saga completes, every effect once.

PostgreSQL only: that is where many workers on many machines share one database.
Set ``CHAOS_SEED`` to replay a schedule; the seed in use is printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloudphone.saga import EventKind, SagaEngine, SagaStatus
from cloudphone.saga.store.tables import saga_events, saga_runs
from tests.support.chaos import (
    STEPS,
    TRANSACTIONAL_STEPS,
    build_chaos_saga,
    count_effects,
    create_chaos_schema,
)
from tests.support.processes import WorkerProcess
from tests.support.waiting import eventually
from tests.support.worker_proc import WorkerPool

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

SAGAS = 240
WORKERS = 4
CONCURRENCY = 3
LEASE_MS = 1000
WORK_MS = (20, 80)
"""Simulated outside-world time per step, so kills land mid-step and mid-transaction."""
MAX_KILLS = 15
CHAOS_SECONDS = 12.0
KILL_EVERY = (0.2, 0.8)


@pytest.fixture
def saga_name(unique: str) -> str:
    return f"chaos_eo_{unique}"


@pytest.fixture
def workers(postgres_url: str, saga_name: str, tmp_path: Path) -> Iterator[WorkerPool]:
    """Worker children on PostgreSQL; every one still running is SIGKILLed at the end."""
    pool = WorkerPool(postgres_url, saga_name, tmp_path, lease_ms=LEASE_MS, concurrency=CONCURRENCY)
    yield pool
    pool.close()


@pytest.fixture
async def engine(postgres_url: str, saga_name: str, unique: str) -> AsyncIterator[SagaEngine]:
    """The test's own engine (no worker): starts runs and reads them."""
    engine = SagaEngine(postgres_url, [build_chaos_saga(saga_name)], worker_id=f"starter-{unique}")
    await create_chaos_schema(engine.db)
    yield engine
    await engine.close()


@dataclass
class Chaos:
    """The kill schedule and what it did."""

    rng: random.Random
    kills: int = 0
    same_id_restarts: int = 0
    new_id_restarts: int = 0
    log: list[str] = field(default_factory=list)

    def restart_id(self, victim: WorkerProcess, slot: int, unique: str) -> str:
        # Both kinds early, then at random: a restart with the same id reclaims at once, a new
        # id leaves the runs to be taken over when their leases expire.
        same = self.kills == 1 if self.kills <= 2 else self.rng.random() < 0.5
        if same:
            self.same_id_restarts += 1
            return victim.worker_id
        self.new_id_restarts += 1
        return f"w{slot}-{unique}-{self.kills}"


async def active_runs(engine: SagaEngine, saga_name: str) -> int:
    r = saga_runs.c
    async with engine.db.read() as conn:
        n = await conn.scalar(
            sa.select(sa.func.count()).where(
                r.saga_type == saga_name, r.status != SagaStatus.COMPLETED.value
            )
        )
    return int(n or 0)


async def run_chaos(
    chaos: Chaos, pool: WorkerPool, live: list[WorkerProcess], engine: SagaEngine, unique: str
) -> None:
    """SIGKILL a random ready worker every 0.2-0.8 s and restart it, within the bounds."""
    started = time.monotonic()
    while chaos.kills < MAX_KILLS and time.monotonic() - started < CHAOS_SECONDS:
        # The pause is the chaos schedule itself, not a wait for work to happen.
        await asyncio.sleep(chaos.rng.uniform(*KILL_EVERY))
        if await active_runs(engine, pool.saga_name) == 0:
            break
        ready = [i for i, p in enumerate(live) if p.poll_ready()]
        if not ready:
            continue
        slot = chaos.rng.choice(ready)
        victim = live[slot]
        victim.kill()
        chaos.kills += 1
        new_id = chaos.restart_id(victim, slot, unique)
        chaos.log.append(f"{time.monotonic() - started:5.2f}s kill {victim.worker_id} -> {new_id}")
        live[slot] = pool.spawn(new_id)


@pytest.mark.timeout(110)
async def test_competing_workers_killed_at_random_complete_every_saga_exactly_once(
    engine: SagaEngine, workers: WorkerPool, saga_name: str, unique: str
) -> None:
    """4 workers SIGKILLed and restarted at random: all COMPLETED, each effect once, no gaps."""
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"CHAOS_SEED={seed}")
    chaos = Chaos(random.Random(seed))
    live = [workers.spawn(f"w{i}-{unique}-0") for i in range(WORKERS)]
    for process in live:
        await process.ready(within=20)
    ids = [
        await engine.start(saga_name, {"work_ms": chaos.rng.randint(*WORK_MS)})
        for _ in range(SAGAS)
    ]

    await run_chaos(chaos, workers, live, engine, unique)
    for process in live:
        await process.ready(within=20)
    await eventually(
        lambda: active_runs(engine, saga_name),
        lambda n: n == 0,
        timeout=60,
        interval=0.1,
        what="every saga finished",
    )
    print(
        f"kills={chaos.kills} same_id={chaos.same_id_restarts} new_id={chaos.new_id_restarts}",
        *chaos.log,
        sep="\n",
    )

    r, e = saga_runs.c, saga_events.c
    async with engine.db.read() as conn:
        status_rows = await conn.execute(
            sa.select(r.status, sa.func.count()).where(r.saga_type == saga_name).group_by(r.status)
        )
        statuses = {str(status): int(n) for status, n in status_rows}
        owned = await conn.scalar(
            sa.select(sa.func.count()).where(r.saga_type == saga_name, r.owner.is_not(None))
        )
        per_run = (
            await conn.execute(
                sa.select(
                    e.saga_id,
                    sa.func.count(),
                    sa.func.min(e.seq),
                    sa.func.max(e.seq),
                    sa.func.max(r.last_seq),
                )
                .join(saga_runs, r.id == e.saga_id)
                .where(r.saga_type == saga_name)
                .group_by(e.saga_id)
            )
        ).all()
        successes = Counter(
            {
                (saga_id, step): n
                for saga_id, step, n in (
                    await conn.execute(
                        sa.select(e.saga_id, e.step, sa.func.count())
                        .join(saga_runs, r.id == e.saga_id)
                        .where(
                            r.saga_type == saga_name,
                            e.kind == EventKind.STEP_SUCCEEDED.value,
                        )
                        .group_by(e.saga_id, e.step)
                    )
                ).all()
            }
        )
        takeover_count = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(saga_events.join(saga_runs, r.id == e.saga_id))
            .where(r.saga_type == saga_name, e.kind == EventKind.LEASE_TAKEOVER.value)
        )

    assert statuses == {SagaStatus.COMPLETED.value: SAGAS}, workers.logs()
    assert owned == 0, "completed runs still have an owner"
    assert len(per_run) == SAGAS
    gaps = [row for row in per_run if not (row[2] == 1 and row[1] == row[3] == row[4])]
    assert gaps == [], "history seq not contiguous from 1 (saga_id, count, min, max, last_seq)"
    assert successes == Counter({(i, step): 1 for i in ids for step in STEPS})
    effects = await count_effects(engine.db, ids)
    assert effects == Counter({(i, step): 1 for i in ids for step in TRANSACTIONAL_STEPS})
    assert chaos.kills > 0
    assert takeover_count, "no lease was ever taken over: the chaos hit nothing"
