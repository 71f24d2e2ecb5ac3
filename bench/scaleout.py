"""Scale-out: sagas/s with 1, 2 and 4 real ``cloudphone worker`` processes on one PostgreSQL.

For each worker count (alternating the order from round to round): a fresh PostgreSQL
database, migrated by a platform built here through ``platform.py`` (no worker in this
process); N ``cloudphone worker`` children (64 runs in flight each, production lease and poll
interval), waited on until each logs ``worker ready``; then this process inserts M ``demo``
runs (3 plain no-op steps: the saga every ``cloudphone worker`` knows) as fast as it can, 64
starts in flight, each announced by ``NOTIFY``. Measured: first start → last COMPLETED
(polled every 50 ms), how long the starts took, how the runs spread over the workers, and the
CPU of the workers and of the database's PostgreSQL backends per saga. Workers are stopped by
pid (SIGTERM) and the database is dropped afterwards, also on failure.

    python bench/scaleout.py --workers 1 2 4 --sagas 3000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from peers_common import PgProbe, libpq, process_cpu  # noqa: E402
from tests.support.databases import (  # noqa: E402 - after the path tweak above
    create_postgres_database,
    drop_postgres_database,
    postgres_admin_url,
)
from tests.support.server import WORKER_READY, CloudphoneProcess, child_env, spawn_worker  # noqa: E402

COMPLETED = "SELECT count(*) FROM saga_runs WHERE saga_type = 'demo' AND status = 'COMPLETED'"
SPREAD = (
    "SELECT outputs->'PREPARE'->>'prepared_by', count(*) FROM saga_runs"
    " WHERE saga_type = 'demo' GROUP BY 1"
)
"""Runs per worker: the demo's first step records the process that ran it (in ``outputs``)."""


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--sagas", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64, help="runs in flight per worker")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--tag", default=None)
    return parser.parse_args()


async def insert_runs(url: str, data_dir: Path, n: int) -> tuple[float, float]:
    """Start n demo runs from a platform without a worker; (first start, last start) times."""
    from cloudphone.platform import build_platform
    from cloudphone.settings import load_settings

    settings = load_settings(database_url=url, data_dir=data_dir, log_level="warning")
    async with build_platform(settings, with_worker=False) as platform:
        if n == 0:  # migrate only
            return 0.0, 0.0
        sem = asyncio.Semaphore(64)
        first = time.perf_counter()

        async def one(i: int) -> None:
            async with sem:
                await platform.engine.start("demo", {"message": f"scale-out {i}"})

        await asyncio.gather(*(one(i) for i in range(n)))
        return first, time.perf_counter()


def wait_completed(url: str, n: int, workers: list[CloudphoneProcess], timeout: float) -> float:
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while True:
            row = conn.execute(COMPLETED).fetchone()
            if row is not None and row[0] >= n:
                return time.perf_counter()
            for worker in workers:
                if not worker.alive:
                    raise RuntimeError(f"a worker exited:\n{worker.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{row} of {n} completed after {timeout}s")
            time.sleep(0.05)


def spread(url: str) -> list[int]:
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        return sorted((int(row[1]) for row in conn.execute(SPREAD).fetchall()), reverse=True)


def measure(n_workers: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    url = create_postgres_database("scaleout")
    workers: list[CloudphoneProcess] = []
    try:
        data_dir = workdir / "var"
        asyncio.run(insert_runs(url, data_dir, 0))  # migrations, before the workers start
        env = child_env(
            data_dir,
            url,
            CLOUDPHONE_WORKER_LEASE="30s",
            CLOUDPHONE_WORKER_POLL_INTERVAL="1s",
            CLOUDPHONE_WORKER_CONCURRENCY=str(args.concurrency),
        )
        workers = [spawn_worker(workdir, env, f"w{n_workers}-{i}") for i in range(n_workers)]
        for worker in workers:
            worker.wait_log(WORKER_READY, timeout=60)
        probe = PgProbe(postgres_admin_url(), _name(url))
        try:
            cpu0 = {w.pid: process_cpu(w.pid) for w in workers}
            pg0 = probe.backend_cpu()
            load = os.getloadavg()[0]
            first, last_start = asyncio.run(insert_runs(url, data_dir, args.sagas))
            end = wait_completed(url, args.sagas, workers, timeout=600)
            worker_cpu = sum(process_cpu(w.pid) - cpu0[w.pid] for w in workers)
            pg_cpu = sum(v - pg0.get(pid, 0.0) for pid, v in probe.backend_cpu().items())
        finally:
            probe.close()
        return {
            "workers": n_workers,
            "sagas": args.sagas,
            "elapsed_s": end - first,
            "throughput": args.sagas / (end - first),
            "starts_s": last_start - first,
            "worker_cpu_ms_per_saga": worker_cpu / args.sagas * 1000,
            "pg_cpu_ms_per_saga": pg_cpu / args.sagas * 1000,
            "runs_per_worker": spread(url),
            "loadavg_before": round(load, 2),
        }
    finally:
        for worker in workers:
            worker.stop()
        drop_postgres_database(url)


def _name(url: str) -> str:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    assert name is not None
    return name


def main() -> int:
    args = parse()
    started = datetime.now(UTC)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
        for round_ in range(args.rounds):
            order = args.workers if round_ % 2 == 0 else list(reversed(args.workers))
            for n in order:
                result = measure(n, args, Path(tmp) / f"r{round_}-n{n}")
                result["round"] = round_
                results.append(result)
                print(
                    f"  {n} worker(s) r{round_}: {result['throughput']:6.1f} sagas/s "
                    f"(starts {result['starts_s']:.1f} s, all {result['elapsed_s']:.1f} s), "
                    f"worker CPU {result['worker_cpu_ms_per_saga']:.2f} ms/saga, "
                    f"PG {result['pg_cpu_ms_per_saga']:.2f} ms/saga, "
                    f"spread {result['runs_per_worker']}, load {result['loadavg_before']}",
                    flush=True,
                )
    print("\n| workers | sagas/s (median, min-max) | worker CPU ms/saga | PG CPU ms/saga |")
    print("|---|---|---|---|")
    for n in args.workers:
        mine = [r for r in results if r["workers"] == n]
        rate = [r["throughput"] for r in mine]
        print(
            f"| {n} | {statistics.median(rate):.0f} ({min(rate):.0f}-{max(rate):.0f}) "
            f"| {statistics.median(r['worker_cpu_ms_per_saga'] for r in mine):.2f} "
            f"| {statistics.median(r['pg_cpu_ms_per_saga'] for r in mine):.2f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.tag or f"scaleout-{started.strftime('%Y%m%dT%H%M%SZ')}"
    report = {"command": " ".join(sys.argv), "started_at": started.isoformat(), "runs": results}
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / f'{stem}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
