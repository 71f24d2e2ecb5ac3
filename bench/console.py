"""The console's sagas list and overview over 100,000 runs: server time, and the query plans.

Builds the platform (``platform.py``) on a fresh database migrated by Alembic, seeds
``saga_runs`` with N runs in one bulk insert per batch (the engine would take minutes to run
them; list and overview read only ``saga_runs``), spread over 7 days with a realistic mix of
statuses, types and 200 users, then ANALYZEs. It signs in to the console in process (ASGI,
no network) and requests each page ``--repeat`` times; the time is the console's own
``Server-Timing`` (routing, use cases, SQL, templates). Every SQL statement a page ran is then
EXPLAINed with its parameters.

    python bench/console.py --db sqlite --runs 100000
    python bench/console.py --db postgres --runs 100000 --explain

Targets (issue 10): first page of the list with any one filter < 100 ms; overview < 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.console import signed_in  # noqa: E402
from tests.support.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.support.server import TEST_SECRET, token  # noqa: E402

from cloudphone.api.app import create_app  # noqa: E402
from cloudphone.domain import Role  # noqa: E402
from cloudphone.platform import Platform, build_platform  # noqa: E402
from cloudphone.saga.store.tables import saga_runs  # noqa: E402
from cloudphone.settings import load_settings  # noqa: E402

TYPES = ["payment_refund", "device_create", "app_upload", "device_delete", "demo"]
MIX = [
    ("COMPLETED", 0.85),
    ("COMPENSATED", 0.06),
    ("RUNNING", 0.03),
    ("FAILED", 0.02),
    ("PENDING", 0.02),
    ("TIMED_OUT", 0.01),
    ("COMPENSATING", 0.01),
]
ACTIVE = {"RUNNING", "PENDING", "COMPENSATING"}


def seed_rows(count: int, now: datetime, rand: random.Random) -> list[dict[str, Any]]:
    statuses, weights = zip(*MIX, strict=True)
    rows = []
    for _ in range(count):
        status = rand.choices(statuses, weights)[0]
        created = now - timedelta(seconds=rand.uniform(0, 7 * 86400))
        finished = None
        if status not in ACTIVE:
            finished = min(created + timedelta(seconds=rand.lognormvariate(0, 1.2)), now)
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "saga_type": rand.choice(TYPES),
                "status": status,
                "current_step": None if status == "COMPLETED" else "STEP_2",
                "attempt": 1,
                "data": {"n": 1},
                "error": {"type": "Boom", "message": "provider said no", "step": "STEP_2"}
                if status == "FAILED"
                else None,
                "epoch": 1,
                "deadline_noted": False,
                "cancel_requested": False,
                "last_seq": 3,
                "started_by": f"user-{rand.randrange(200)}",
                "resolution": "by hand" if status == "FAILED" and rand.random() < 0.5 else None,
                "next_run_at": created if status in ACTIVE else None,
                "created_at": created,
                "updated_at": finished or created,
                "finished_at": finished,
            }
        )
    return rows


async def seed(platform: Platform, count: int) -> str:
    rand = random.Random(10)
    now = datetime.now(UTC)
    batch = 5000
    for start in range(0, count, batch):
        rows = seed_rows(min(batch, count - start), now, rand)
        async with platform.db.begin() as conn:
            await conn.execute(sa.insert(saga_runs), rows)
    async with platform.db.begin() as conn:
        await conn.execute(sa.text("ANALYZE"))
        sample = await conn.scalar(sa.select(saga_runs.c.id).limit(1))
    return str(sample)


class Recorder:
    """Keeps the SQL each page ran (to EXPLAIN it afterwards)."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []
        self.on = False

    def __call__(self, conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        if self.on and statement.lstrip().upper().startswith("SELECT"):
            self.statements.append((statement, params))


async def measure(client: httpx.AsyncClient, path: str, repeat: int) -> tuple[float, float, float]:
    times = []
    for _ in range(repeat):
        answer = await client.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
        match = re.search(r"dur=([0-9.]+)", answer.headers["server-timing"])
        assert match
        times.append(float(match.group(1)))
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], max(times)


async def explain(platform: Platform, statements: list[tuple[str, Any]]) -> list[str]:
    plans = []
    prefix = "EXPLAIN " if platform.db.is_postgres else "EXPLAIN QUERY PLAN "
    async with platform.db.read() as conn:
        for statement, params in statements:
            result = await conn.exec_driver_sql(prefix + statement, params)
            rows = [" | ".join(str(v) for v in row) for row in result]
            one_line = " ".join(statement.split())
            plans.append(f"-- {one_line[:300]}\n" + "\n".join(f"   {r}" for r in rows))
    return plans


PAGES = {
    "list, no filter": "/ui/sagas",
    "list, status=FAILED": "/ui/sagas?status=FAILED",
    "list, status=COMPLETED": "/ui/sagas?status=COMPLETED",
    "list, type=payment_refund": "/ui/sagas?type=payment_refund",
    "list, started_by=user-7": "/ui/sagas?started_by=user-7",
    "list, created in the last 1h": "/ui/sagas?range=1h",
    "list, created since 3 days ago (custom)": "/ui/sagas?after={three_days}",
    "list, needs attention": "/ui/sagas?needs_attention=1",
    "list, search saga id": "/ui/sagas?q={sample}",
    "list, search unknown id": "/ui/sagas?q=no-such-id",
    "overview, window 1h": "/ui/?window=1h",
    "overview, window 24h (default)": "/ui/",
    "overview, window 7d": "/ui/?window=7d",
}


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-console-"))
    pg_url = create_postgres_database("bench_console") if args.db == "postgres" else None
    url = pg_url or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    settings = load_settings(
        data_dir=workdir / "var", database_url=url, jwt_secret=TEST_SECRET, demo=True
    )
    platform = build_platform(settings, with_worker=False)
    await platform.start()
    try:
        sample = await seed(platform, args.runs)
        recorder = Recorder()
        sa.event.listen(platform.db.engine.sync_engine, "before_cursor_execute", recorder)
        transport = httpx.ASGITransport(app=create_app(platform))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            await signed_in(client, token("root", Role.ADMIN))
            three_days = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
            print(f"{args.runs:,} runs on {args.db}; server time over {args.repeat} requests")
            print("| page | p50 | p95 | max |\n|---|---|---|---|")
            explained: dict[str, list[tuple[str, Any]]] = {}
            for name, template in PAGES.items():
                path = template.format(sample=sample, three_days=three_days)
                await client.get(path)  # warm up
                recorder.statements.clear()
                recorder.on = True
                await client.get(path)
                recorder.on = False
                explained[name] = list(recorder.statements)
                p50, p95, top = await measure(client, path, args.repeat)
                print(f"| {name} | {p50:.1f} ms | {p95:.1f} ms | {top:.1f} ms |")
        if args.explain:
            for name, statements in explained.items():
                print(f"\n## {name}")
                print("\n".join(await explain(platform, statements)))
    finally:
        await platform.close()
        if pg_url:
            drop_postgres_database(pg_url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--explain", action="store_true")
    asyncio.run(main(parser.parse_args()))
