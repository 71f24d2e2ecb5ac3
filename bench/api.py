"""Saga start over HTTP at a fixed request rate, against ``cloudphone serve`` on PostgreSQL.

(``--db sqlite``: on a fresh SQLite file instead, the embedded default.)

Open loop: request i is due at ``start + i / rate`` whether or not earlier ones answered, and
its latency counts from that due time (no coordinated omission). The server is a real
``cloudphone serve`` child process on a fresh PostgreSQL database; each request is
``POST /demo`` (a 3-step saga) with a bearer token. After the run, every started saga must
reach COMPLETED.

    python bench/api.py --rate 200 --duration 30                      # serve + embedded worker
    python bench/api.py --rate 200 --duration 30 --mode separate      # + 1 worker process
    python bench/api.py --rate 200 --duration 30 --mode deferred      # workers start after
    python bench/api.py --db sqlite --rate 50 --duration 20           # embedded, on SQLite

Target (issue 3): p99 <= 10 ms at 200 req/s on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.databases import (  # noqa: E402 - after the path tweak above
    create_postgres_database,
    drop_postgres_database,
)
from tests.support.server import (  # noqa: E402
    CloudphoneProcess,
    auth,
    child_env,
    start_serve,
    start_worker,
)


@dataclass
class Result:
    rate: float
    duration_s: float
    mode: str
    workers: int
    requests: int
    errors: int
    achieved_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    service_p99_ms: float
    completed: int
    drain_s: float
    server_cpu_ms_per_saga: float
    command: str
    host: str
    cpus: int
    at: str


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    index = min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms)) - 1))
    return sorted_ms[index]


async def load(
    base_url: str, rate: float, duration: float, warmup: float
) -> tuple[list[float], list[float], int, list[str]]:
    """Fire POST /demo at ``rate``; returns (latency from due time, service time, errors, ids).

    aiohttp, not httpx: on this class of machine httpx's client alone adds ~2 ms per request,
    which would be measured as server latency.
    """
    headers = auth("bench")
    latencies: list[float] = []
    service: list[float] = []
    ids: list[str] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(
        base_url, headers=headers, connector=connector, timeout=timeout
    ) as http:

        async def one(due: float, measured: bool) -> None:
            nonlocal errors
            sent = time.perf_counter()
            try:
                async with http.post("/demo", json={"message": "bench"}) as response:
                    body = await response.json()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                errors += measured
                return
            done = time.perf_counter()
            if status != 202:
                errors += measured
                return
            ids.append(body["id"])
            if measured:
                latencies.append((done - due) * 1000)
                service.append((done - sent) * 1000)

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.05
        total = int((warmup + duration) * rate)
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, i >= warmup * rate)))
        await asyncio.gather(*tasks)
    return latencies, service, errors, ids


async def drain(base_url: str, count: int, patience: float = 120) -> tuple[int, float]:
    """Wait until ``count`` bench sagas are COMPLETED; returns (completed, seconds waited)."""
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, headers=auth("bench"), timeout=10) as http:
        while True:
            done = 0
            offset: int | None = 0
            while offset is not None:
                page = (
                    await http.get(
                        "/sagas", params={"status": "COMPLETED", "limit": 200, "offset": offset}
                    )
                ).json()
                done += len(page["items"])
                offset = page["next_offset"]
            if done >= count or time.perf_counter() - started > patience:
                return done, time.perf_counter() - started
            await asyncio.sleep(0.5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix="cloudphone-bench-"))
    fresh = args.database_url is None and args.db == "postgres"
    if args.database_url:
        url = args.database_url
    elif args.db == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    else:
        url = create_postgres_database("cloudphone_bench")
    env = child_env(
        workdir / "var",
        url,
        CLOUDPHONE_LOG_LEVEL="warning",
        CLOUDPHONE_ACCESS_LOG="false",
        CLOUDPHONE_DB_POOL_SIZE=str(args.pool),
        CLOUDPHONE_WORKER_LEASE="30s",
        CLOUDPHONE_WORKER_POLL_INTERVAL="1s",
    )
    processes: list[CloudphoneProcess] = []
    # Workers log at info: their "worker ready" line is how we know they started.
    worker_env = {**env, "CLOUDPHONE_LOG_LEVEL": "info"}

    def start_workers() -> None:
        for i in range(args.workers):
            processes.append(start_worker(workdir, worker_env, f"bench-w{i}"))

    try:
        serve_args = () if args.mode == "embedded" else ("--no-worker",)
        server = start_serve(workdir, env, *serve_args)
        processes.append(server)
        if args.mode == "separate":
            start_workers()
        base_url = str(server.base_url)
        cpu_before = cpu_seconds(server.pid)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            latencies, service, errors, ids = runner.run(
                load(base_url, args.rate, args.duration, args.warmup)
            )
            if args.mode == "deferred":
                start_workers()
            completed, drain_s = runner.run(drain(base_url, len(ids)))
        server_cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        for process in processes:
            process.stop()
        if fresh:
            drop_postgres_database(url)
    latencies.sort()
    service.sort()
    return Result(
        rate=args.rate,
        duration_s=args.duration,
        mode=args.mode,
        workers=0 if args.mode == "embedded" else args.workers,
        requests=len(latencies),
        errors=errors,
        achieved_rps=len(latencies) / args.duration,
        p50_ms=round(percentile(latencies, 0.50), 2),
        p90_ms=round(percentile(latencies, 0.90), 2),
        p99_ms=round(percentile(latencies, 0.99), 2),
        max_ms=round(latencies[-1] if latencies else float("nan"), 2),
        service_p99_ms=round(percentile(service, 0.99), 2),
        completed=completed,
        drain_s=round(drain_s, 1),
        server_cpu_ms_per_saga=round(server_cpu / max(len(ids), 1) * 1000, 3),
        command="python " + " ".join(sys.argv),
        host=host.node(),
        cpus=os.cpu_count() or 0,
        at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200, help="requests per second")
    parser.add_argument("--duration", type=float, default=30, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds first")
    parser.add_argument(
        "--mode",
        choices=["embedded", "separate", "deferred"],
        default="embedded",
        help=(
            "embedded: serve runs the worker; separate: serve --no-worker and --workers\n"
            "worker processes during the load; deferred: the workers start after the load\n"
            "(measures starting alone, as when workers run on other machines)"
        ),
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (not embedded)")
    parser.add_argument("--pool", type=int, default=10, help="PostgreSQL pool per process")
    parser.add_argument(
        "--db",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="a fresh PostgreSQL database, or a fresh SQLite file",
    )
    parser.add_argument("--database-url", help="existing PostgreSQL (default: a fresh database)")
    parser.add_argument("--save", type=Path, help="append the result as a JSON line to this file")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(asdict(result), indent=2))
    stats = f"p50 {result.p50_ms} ms, p99 {result.p99_ms} ms, max {result.max_ms} ms"
    verdict = "PASS" if result.p99_ms <= 10 and not result.errors else "MISS"
    print(
        f"{verdict}: {result.achieved_rps:.0f} req/s, {stats}, {result.errors} errors",
        file=sys.stderr,
    )
    if result.completed < result.requests:
        print(f"only {result.completed}/{result.requests} sagas completed", file=sys.stderr)
    if args.save:
        with args.save.open("a") as file:
            file.write(json.dumps(asdict(result)) + "\n")


if __name__ == "__main__":
    main()
