"""One group-commit flush of 30 runs' progress: the JSON batch (COMMIT_SQL) vs typed arrays.

Client CPU and PostgreSQL backend CPU per item, and wall time per batch, on a fresh database
(created and dropped here); six rounds alternating the two (ABBA), medians printed:

    python bench/group_flush.py [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from cloudphone.saga import Saga, SagaEngine, StepContext
from cloudphone.saga.progress import NewEvent, Progress
from cloudphone.saga.records import EventKind
from cloudphone.saga.state import SagaStatus
from cloudphone.saga.store import pg_sql

RUNS = 30
CALLS = 300


def backend_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the backend ``pid`` has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def step_progress(now: datetime) -> Progress:
    """A step that succeeded (one event), as a plain step's progress write carries."""
    detail = {"started_at": now.isoformat(), "duration_ms": 0.3, "worker": "w-1"}
    return Progress(
        status=SagaStatus.RUNNING,
        step_index=0,
        step="A",
        attempt=1,
        output_step=None,
        output=None,
        error=None,
        compensation_cause=None,
        keep_lease=True,
        next_run_at=now,
        finished=False,
        deadline_noted=False,
        clear_cancel=False,
        events=(NewEvent(EventKind.STEP_SUCCEEDED, at=now, step="A", attempt=1, detail=detail),),
        now=now,
        retry_since=None,
    )


async def prepare(url: str) -> list[str]:
    saga = Saga("group_flush")

    @saga.step("A")
    async def step(ctx: StepContext) -> None:
        return None

    engine = SagaEngine(url, [saga])
    try:
        await engine.create_schema()
        return [await engine.start(saga.name, {}) for _ in range(RUNS)]
    finally:
        await engine.close()


async def measure(dsn: str, ids: list[str]) -> dict[str, list[tuple[float, float, float]]]:
    conn = await asyncpg.connect(dsn, server_settings={"plan_cache_mode": "force_generic_plan"})
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        now = datetime.now(UTC)
        items = [(run_id, 1, step_progress(now), None) for run_id in ids]
        until = now + timedelta(seconds=30)

        async def as_json() -> list[Any]:
            batch = [pg_sql.progress_item(r, e, p, until, s) for r, e, p, s in items]
            return list(await conn.fetch(pg_sql.COMMIT_SQL, json.dumps(batch), ids))

        async def as_arrays() -> list[Any]:
            columns = pg_sql.progress_columns(items, until)
            return list(await conn.fetch(pg_sql.COMMIT_MANY_SQL, *columns))

        ways: dict[str, Callable[[], Awaitable[list[Any]]]] = {
            "json": as_json,
            "arrays": as_arrays,
        }
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ways}
        for round_ in range(6):
            order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
            for name in order:
                flush = ways[name]
                for _ in range(20):
                    await flush()
                cpu, server, wall = time.process_time(), backend_cpu(pid), time.perf_counter()
                for _ in range(CALLS):
                    assert len(await flush()) == RUNS
                results[name].append(
                    (
                        (time.process_time() - cpu) / CALLS / RUNS * 1e6,
                        (backend_cpu(pid) - server) / CALLS / RUNS * 1e6,
                        (time.perf_counter() - wall) / CALLS * 1e3,
                    )
                )
        return results
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    name = f"group_flush_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.admin_url)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        dsn = args.admin_url.rsplit("/", 1)[0] + f"/{name}"
        ids = await prepare(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
        for way, rounds in (await measure(dsn, ids)).items():
            client, server, wall = (statistics.median(r[i] for r in rounds) for i in range(3))
            print(
                f"{way:<6} client {client:.1f} us/item  PostgreSQL {server:.1f} us/item  "
                f"wall {wall:.2f} ms per batch of {RUNS}"
            )
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
