"""cloudphone beside its peers (DBOS, optionally Temporal): the same sagas, the same PostgreSQL.

Two shapes of 4-step sagas (T1 transactional → S2 plain → T3 transactional → S4 plain):
``noop`` (no-op steps) and ``write`` (T1 and T3 each INSERT one business row). Each system gets
one fresh PostgreSQL database for the run (created here, dropped at the end, also on failure)
and runs each cell — shape x concurrency x round — in a child process of its own, alternating
systems in ABBA order so that machine noise falls on both. A cell is a closed loop: C clients
each start a saga and wait for its completion, N sagas in all, after a warm-up.

    python bench/peers.py                                  # cloudphone, DBOS; 1000 sagas, c=1,8,64
    python bench/peers.py --systems cloudphone dbos dbos-ds temporal --rounds 3
    python bench/peers.py --quick                          # smoke run: 100 sagas, one round
    python bench/peers.py --concurrency 16 32 50 64 128 --shapes noop   # find the best setting

Systems: ``cloudphone`` (``SagaEngine`` + worker in the child), ``dbos`` (DBOS 3.4, steps; the
``write`` shape's INSERT is its own commit inside the step), ``dbos-ds`` (DBOS 3.4 with T1/T3 as
datasource transactions: the INSERT commits with the step's checkpoint, exactly once),
``temporal`` (a ``temporal server start-dev`` started and stopped here; activities write to
PostgreSQL). Prints a table with the ratios, writes JSON and a PNG under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from peers_common import SHAPES, Cell, libpq
from peers_report import environment, plot, summarise, table
from sqlalchemy.engine import make_url

HERE = Path(__file__).resolve().parent
SYSTEMS = ("cloudphone", "dbos", "dbos-ds", "temporal")
DEFAULT_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
RESULT = "RESULT "
"""Prefix of a child's result lines on its stdout."""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=["cloudphone", "dbos"])
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--sagas", type=int, default=None, help="per cell (default 1000)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="sagas before each timed window (default: max(C, sagas/20))",
    )
    parser.add_argument("--rounds", type=int, default=None, help="default 3")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 100 sagas, 1 round, one child per system"
    )
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("CLOUDPHONE_TEST_POSTGRES_URL", DEFAULT_ADMIN),
        help="PostgreSQL server to create the databases on (asyncpg URL)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--tag", default=None, help="file name stem (default peers-<UTC time>)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--db-prefix", default="peers", help="name prefix of the databases")
    parser.add_argument(
        "--worker-slack", type=int, default=0, help="cloudphone: worker slots beyond the clients"
    )
    parser.add_argument(
        "--step-group",
        type=int,
        default=None,
        help="cloudphone: most transactional steps sharing a transaction (1: each alone)",
    )
    parser.add_argument(
        "--write-via",
        choices=("session", "write"),
        default="session",
        help="cloudphone's business INSERT in `write`: ctx.session.execute (sent at once) or"
        " ctx.write (queued, sent with the step's progress record)",
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="cloudphone's event loop (uvloop: what its CLI runs on when installed)",
    )
    parser.add_argument(
        "--dbos-mode",
        choices=("threads", "async"),
        default="threads",
        help="DBOS clients: threads calling the workflow, or asyncio tasks",
    )
    parser.add_argument(
        "--dbos-pool",
        type=int,
        default=None,
        help="DBOS sys_db_pool_size (default: DBOS's own, 20)",
    )
    parser.add_argument("--child-timeout", type=float, default=900.0, help="seconds per child")
    parser.add_argument("--replot", type=Path, help="draw the PNG of a recorded JSON again")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sagas = args.sagas or (100 if args.quick else 1000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    return args


# -- the child: one system, some cells ------------------------------------------------------


def child_main(job: dict[str, Any]) -> None:
    cells = [Cell(**cell) for cell in job["cells"]]
    system = job["system"]
    if system == "cloudphone":
        from peers_cloudphone import run_cells

        # The loop `cloudphone serve` and `cloudphone worker` run on (uvloop when installed).
        factory = None
        if cells[0].options.get("loop", "uvloop") == "uvloop":
            import uvloop

            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            results = runner.run(run_cells(cells))
    elif system in ("dbos", "dbos-ds"):
        from peers_dbos import run_cells as run_dbos

        results = run_dbos(cells)
    else:
        from peers_temporal import run_cells as run_temporal

        results = asyncio.run(run_temporal(cells))
    for result in results:
        print(RESULT + json.dumps(result.to_json()), flush=True)


# -- the parent: databases, servers, plan, children -----------------------------------------


def create_database(admin_url: str, prefix: str, system: str) -> str:
    name = f"{prefix}_{system.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@contextmanager
def databases(admin_url: str, prefix: str, systems: list[str]) -> Iterator[dict[str, str]]:
    """One fresh database per system, dropped afterwards whatever happens."""
    made: dict[str, str] = {}
    try:
        for system in systems:
            made[system] = create_database(admin_url, prefix, system)
        yield made
    finally:
        for url in made.values():
            drop_database(admin_url, url)


def plan(
    args: argparse.Namespace, urls: dict[str, str], extra: dict[str, Any]
) -> list[tuple[str, list[Cell]]]:
    """Jobs (system, cells) in run order: systems alternate ABBA from cell to cell."""
    jobs: list[tuple[str, list[Cell]]] = []
    k = 0
    for round_ in range(args.rounds):
        per_system: dict[str, list[Cell]] = {system: [] for system in args.systems}
        for shape in args.shapes:
            for concurrency in args.concurrency:
                order = list(args.systems)
                if k % 2:
                    order.reverse()
                k += 1
                for system in order:
                    cell = Cell(
                        system=system,
                        shape=shape,
                        concurrency=concurrency,
                        sagas=args.sagas,
                        warmup=warmup(args, concurrency),
                        round=round_,
                        url=urls[system],
                        admin_url=args.admin_url,
                        options=options(args, system, extra),
                    )
                    if args.quick:
                        per_system[system].append(cell)
                    else:
                        jobs.append((system, [cell]))
        if args.quick:  # one child per system and round: fast, and the harness still runs
            ordered = list(per_system.items())
            jobs.extend(reversed(ordered) if round_ % 2 else ordered)
    return jobs


def warmup(args: argparse.Namespace, concurrency: int) -> int:
    if args.warmup is not None:
        return args.warmup
    return min(args.sagas, max(concurrency, args.sagas // 20))


def options(args: argparse.Namespace, system: str, extra: dict[str, Any]) -> dict[str, Any]:
    if system == "cloudphone":
        return {
            "worker_slack": args.worker_slack,
            "step_group": args.step_group,
            "loop": args.loop,
            "write_via": args.write_via,
        }
    if system.startswith("dbos"):
        return {"mode": args.dbos_mode, "pool": args.dbos_pool}
    return dict(extra)


def run_job(system: str, cells: list[Cell], log_dir: Path, timeout: float) -> list[dict[str, Any]]:
    job = {"system": system, "cells": [asdict(cell) for cell in cells]}
    first = cells[0]
    log = log_dir / f"{system}-r{first.round}-{first.shape}-c{first.concurrency}.log"
    with open(log, "wb") as stderr:
        done = subprocess.run(
            [sys.executable, str(HERE / "peers.py"), "--child", json.dumps(job)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            timeout=timeout,
            check=False,
        )
    lines = done.stdout.decode().splitlines()
    results = [json.loads(line[len(RESULT) :]) for line in lines if line.startswith(RESULT)]
    if done.returncode != 0 or len(results) != len(cells):
        raise RuntimeError(
            f"{system} child exited with {done.returncode} after {len(results)} of "
            f"{len(cells)} cells; its log ({log}):\n{log.read_text(errors='replace')[-4000:]}"
        )
    return results


def progress(result: dict[str, Any]) -> None:
    print(
        f"  {result['system']:<10} {result['shape']:<5} c={result['concurrency']:<3} "
        f"r{result['round']}: {result['throughput']:7.1f}/s  p50 {result['p50_ms']:6.1f} ms  "
        f"p99 {result['p99_ms']:6.1f} ms  cpu {result['cpu_ms_per_saga']:5.2f} ms  "
        f"tx {result['commits_per_saga']:.2f} (writes {result['write_commits_per_saga']:.2f})",
        flush=True,
    )


def terminate_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so databases and servers are cleaned up."""

    def raise_exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_exit)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    if args.replot:
        report = json.loads(args.replot.read_text())
        systems = list(dict.fromkeys(row["system"] for row in report["summary"]))
        print(plot(report["summary"], systems, args.replot.with_suffix(".png"), report))
        return 0
    terminate_on_sigterm()
    started_at = datetime.now(UTC)
    env_before = environment(args)
    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peers-logs-")))
        extra: dict[str, Any] = {}
        if "temporal" in args.systems:
            from peers_temporal import dev_server

            extra = stack.enter_context(dev_server(log_dir))
        urls = stack.enter_context(databases(args.admin_url, args.db_prefix, args.systems))
        jobs = plan(args, urls, extra)
        print(
            f"{len(jobs)} children, {args.sagas} sagas per cell, {args.rounds} round(s); "
            f"load average {env_before['loadavg']}",
            flush=True,
        )
        for system, cells in jobs:
            for result in run_job(system, cells, log_dir, args.child_timeout):
                progress(result)
                results.append(result)
    summary = summarise(results, args.systems)
    print()
    print(table(summary, args.systems))
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round((datetime.now(UTC) - started_at).total_seconds(), 1),
        "environment": {**env_before, "loadavg_after": list(os.getloadavg())},
        "summary": summary,
        "cells": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.tag or f"peers-{started_at.strftime('%Y%m%dT%H%M%SZ')}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out / f'{stem}.json'}")
    if not args.no_plot:
        png = plot(summary, args.systems, args.out / f"{stem}.png", report)
        if png is not None:
            print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
