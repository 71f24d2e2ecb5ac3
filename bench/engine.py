"""Engine benchmark: N sagas of 4 no-op steps (2 transactional, 2 plain).

Measures throughput (sagas/s with a concurrent worker), single-saga latency (p50/p99 from
start() to completion, one at a time) and write transactions per saga (PostgreSQL:
pg_stat_database.xact_commit; both: commits counted on the engine's connections).

    python bench/engine.py --db postgres --sagas 5000 --concurrency 64
    python bench/engine.py --db sqlite --sagas 1000
    python bench/engine.py --db sqlite --sagas 1000 --trace   # OpenTelemetry spans on

With ``--trace`` the engine opens its spans through the OpenTelemetry SDK (batched to an
exporter that drops them): the cost of tracing on, minus the export itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import event

from cloudphone.saga import Saga, SagaEngine, StepContext
from cloudphone.saga.store.database import Database, create_sqlite_engine
from cloudphone.saga.store.tables import saga_runs


def build_saga(name: str) -> Saga:
    saga = Saga(name)

    @saga.step("RESERVE", transactional=True)
    async def reserve(ctx: StepContext) -> dict[str, Any]:
        return {"reserved": True}

    @saga.step("CALL")
    async def call(ctx: StepContext) -> dict[str, Any]:
        return {"called": ctx.idempotency_key}

    @saga.step("RECORD", transactional=True)
    async def record(ctx: StepContext) -> None:
        return None

    @saga.step("NOTIFY")
    async def notify(ctx: StepContext) -> None:
        return None

    return saga


def tracing(enabled: bool) -> dict[str, Any]:
    if not enabled:
        return {}
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from cloudphone.saga.otel import OpenTelemetryTracer

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    return {"tracer": OpenTelemetryTracer(provider)}


def own_commits(engine: SagaEngine) -> int:
    """Write transactions the SQLite fast path sent on its own sqlite3 connection."""
    return int(getattr(engine.store, "own_transactions", 0))


def count_commits(engine: SagaEngine) -> list[int]:
    counter = [0]

    @event.listens_for(engine.db.engine.sync_engine, "commit")
    def _commit(_conn: Any) -> None:
        counter[0] += 1

    return counter


def pg_commits(url: str) -> int:
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        return int(row[0])


async def completed(engine: SagaEngine, saga: Saga) -> int:
    async with engine.db.read() as conn:
        count = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(saga_runs)
            .where(saga_runs.c.saga_type == saga.name, saga_runs.c.status == "COMPLETED")
        )
    return int(count or 0)


async def throughput(
    engine: SagaEngine, saga: Saga, n: int, concurrency: int, url: str, pad: str = ""
) -> dict[str, float]:
    counter = count_commits(engine)
    async with engine.worker(concurrency=concurrency):
        await asyncio.sleep(0.5)  # let the worker's start-up reclaim and first idle poll pass
        pg_before = pg_commits(url) if engine.db.is_postgres else 0
        already = await completed(engine, saga)  # the latency runs are of the same type
        counted_before = counter[0] + own_commits(engine)
        started, cpu_started = time.perf_counter(), time.process_time()
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await engine.start(saga.name, {"i": i, "pad": pad} if pad else {"i": i})

        await asyncio.gather(*(one(i) for i in range(n)))
        done = 0
        while done < n:
            await asyncio.sleep(0.05)
            done = await completed(engine, saga) - already
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        counted = counter[0] + own_commits(engine) - counted_before
        pg_delta = pg_commits(url) - pg_before - 2 if engine.db.is_postgres else 0
    return {
        "sagas_per_s": n / elapsed,
        "elapsed_s": elapsed,
        "cpu_ms_per_saga": cpu / n * 1000,
        "commits_per_saga_counted": counted / n,
        "xact_commit_per_saga": pg_delta / n if engine.db.is_postgres else float("nan"),
    }


async def latency(engine: SagaEngine, saga: Saga, n: int) -> dict[str, float]:
    samples = []
    async with engine.worker(concurrency=4):
        await asyncio.sleep(0.3)
        for i in range(n):
            t0 = time.perf_counter()
            saga_id = await engine.start(saga.name, {"i": i})
            await engine.wait(saga_id, timeout=timedelta(seconds=30))
            samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
    }


ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def database_url(kind: str) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db"
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def drop_database(url: str) -> None:
    """Drop the benchmark's own PostgreSQL database (created by database_url)."""
    name = sa.make_url(url).database
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--sagas", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--trace", action="store_true", help="OpenTelemetry spans on")
    parser.add_argument(
        "--sqlite-driver",
        choices=["inline", "aiosqlite"],
        default="inline",
        help="SQLite: the engine's inline driver or SQLAlchemy's stock aiosqlite",
    )
    parser.add_argument(
        "--input-kb",
        type=int,
        default=0,
        help="pad each saga's input with this many KiB (the throughput run)",
    )
    args = parser.parse_args()
    url = database_url(args.db)
    saga = build_saga(f"bench_{uuid.uuid4().hex[:6]}")
    database: Any = url
    if args.db == "sqlite":
        threaded = args.sqlite_driver == "aiosqlite"
        database = Database(create_sqlite_engine(sa.make_url(url), 30_000, threaded=threaded))
    engine = SagaEngine(database, [saga], worker_id="bench", **tracing(args.trace))
    await engine.create_schema()
    try:
        lat = await latency(engine, saga, args.latency_samples)
        pad = "x" * (args.input_kb * 1024)
        thr = await throughput(engine, saga, args.sagas, args.concurrency, url, pad)
    finally:
        await engine.close()
        await engine.db.engine.dispose()
        if args.db == "postgres":
            drop_database(url)
    driver = f" driver={args.sqlite_driver}" if args.db == "sqlite" else ""
    print(
        f"db={args.db}{driver} sagas={args.sagas} concurrency={args.concurrency} "
        f"trace={args.trace} input_kb={args.input_kb}"
    )
    print(
        f"  throughput: {thr['sagas_per_s']:.0f} sagas/s ({thr['elapsed_s']:.2f} s), "
        f"CPU {thr['cpu_ms_per_saga']:.3f} ms per saga (this process, all threads)"
    )
    print(f"  latency (one at a time): p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms")
    print(
        f"  write commits per saga (counted on engine connections): "
        f"{thr['commits_per_saga_counted']:.2f}"
    )
    if args.db == "postgres":
        print(f"  pg_stat_database.xact_commit per saga: {thr['xact_commit_per_saga']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
