"""Claim and orphan-count cost with saga versions (PostgreSQL).

Fills ``saga_runs`` with ROWS runs (one in ten active and due, five types, two versions each),
then times, each in a transaction rolled back afterwards so every call sees the same rows:

- the claim statement as it was before versions (types only),
- the claim by (type, version) pairs, as workers send it now,
- the orphan count a live worker runs once per lease (``saga_runs_unknown_version``), with
  four live workers that between them drive every pair but one.

The throwaway database is dropped at the end.

    python bench/claims.py --rows 50000 --repeat 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.dialects import postgresql

from cloudphone.saga import Database
from cloudphone.saga.store.pg_sql import CLAIM_SQL, type_arrays
from cloudphone.saga.store.tables import metadata, saga_runs
from cloudphone.saga.store.workers import orphaned

_VERSION_FILTER = CLAIM_SQL[
    CLAIM_SQL.index("      -- The versions") : CLAIM_SQL.index("      AND (owner")
]
OLD_CLAIM = CLAIM_SQL.replace(_VERSION_FILTER, "")
"""The claim before versions: the same statement without the (type, version) filter."""

FILL = """
INSERT INTO saga_runs (id, saga_type, status, current_step, attempt, data, epoch,
    deadline_noted, cancel_requested, last_seq, created_at, updated_at, next_run_at,
    saga_version)
SELECT g::text, 'type' || (g % 5), CASE WHEN g % 10 = 0 THEN 'PENDING' ELSE 'COMPLETED' END,
    'A', 1, '{}', 1, false, false, 1, now(), now(), now() - interval '1 second', 1 + g % 2
FROM generate_series(1, $1) g
"""

WORKERS = """
INSERT INTO saga_workers (worker_id, sagas, started_at, heartbeat_at, host, pid)
SELECT 'w' || g, $1::jsonb, now(), now(), 'bench', g FROM generate_series(1, 4) g
"""


async def timed(conn: asyncpg.Connection, call: Callable[[], Awaitable[Any]], n: int) -> float:
    """Median milliseconds of ``call`` inside a transaction rolled back each time."""
    samples = []
    for _ in range(n):
        tx = conn.transaction()
        await tx.start()
        t0 = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t0) * 1000)
        await tx.rollback()
    return statistics.median(samples)


async def drop(url: str) -> None:
    """Drop the throwaway database."""
    name = url.rsplit("/", 1)[-1]
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    from engine import database_url  # the engine benchmark's throwaway database

    url = database_url("postgres")
    db = Database(url)
    async with db.begin() as c:
        await c.run_sync(metadata.create_all)
    await db.dispose()
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    await conn.execute(FILL, args.rows)
    pairs = [(f"type{i}", v) for i in range(5) for v in (1, 2)]
    await conn.execute(WORKERS, json.dumps([list(p) for p in pairs[:-1]]))
    await conn.execute("ANALYZE saga_runs")
    now = datetime.now(UTC)
    names, versions = type_arrays(pairs)
    common = (now, None, 10, "w", now + timedelta(seconds=30), [], now, [])

    def claim(sql: str, *extra: Any) -> Callable[[], Awaitable[Any]]:
        return lambda: conn.fetch(sql, names, *common, *extra)

    count = (
        saga_runs.select()
        .with_only_columns(saga_runs.c.saga_type)
        .where(orphaned(now - timedelta(minutes=1), True))
    )
    compiled = str(
        count.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    )
    results = {
        "claim, types only (before versions)": await timed(conn, claim(OLD_CLAIM), args.repeat),
        "claim, (type, version) pairs": await timed(conn, claim(CLAIM_SQL, versions), args.repeat),
        "orphan count (4 live workers)": await timed(
            conn, lambda: conn.fetch(f"SELECT count(*) FROM ({compiled}) o"), args.repeat // 10
        ),
    }
    await conn.close()
    await drop(url)
    print(f"{args.rows} runs, {args.rows // 10} active and due; median of {args.repeat} calls")
    for name, ms in results.items():
        print(f"  {name}: {ms:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
