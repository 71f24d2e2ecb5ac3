"""Scale-out on PostgreSQL: ``serve --no-worker`` plus two ``cloudphone worker`` processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.http import saga_until, start_demo
from tests.support.server import (
    WORKER_READY,
    CloudphoneProcess,
    auth,
    child_env,
    spawn_worker,
    start_serve,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, CloudphoneProcess]]:
    """A fresh PostgreSQL database, an API without a worker, and two workers."""
    url = create_postgres_database("cloudphone_e2e")
    env = child_env(tmp_path / "var", url)
    processes: dict[str, CloudphoneProcess] = {}
    try:
        # Migrating first avoids three processes queueing on the migration lock at start.
        processes["api"] = start_serve(tmp_path, env, "--no-worker", name="api")
        processes["w1"] = spawn_worker(tmp_path, env, "w1")
        processes["w2"] = spawn_worker(tmp_path, env, "w2")
        for name in ("w1", "w2"):
            processes[name].wait_log(WORKER_READY)
        yield processes
    finally:
        for process in processes.values():
            process.stop()
        drop_postgres_database(url)


async def test_two_workers_share_the_sagas_started_over_http(
    cluster: dict[str, CloudphoneProcess],
) -> None:
    """Every saga completes; the API runs none itself; both workers take part."""
    user = auth("scale")
    async with httpx.AsyncClient(base_url=str(cluster["api"].base_url), timeout=10) as http:
        ready = await http.get("/readyz", headers=user)
        assert ready.json() == {"status": "ready", "database": "ok", "worker": "absent"}
        ids = await asyncio.gather(*(start_demo(http, user, work_ms=100) for _ in range(40)))
        details = [await saga_until(http, user, saga_id, within=30) for saga_id in ids]
    assert {d["status"] for d in details} == {"COMPLETED"}
    workers = {d["data"]["prepared_by"] for d in details}
    pids = {f"-{cluster[name].pid}" for name in ("w1", "w2")}
    assert {pid for pid in pids if any(w.endswith(pid) for w in workers)} == pids, workers
    assert not any(w.endswith(f"-{cluster['api'].pid}") for w in workers)


async def test_a_worker_stopped_with_sigterm_loses_nothing(
    cluster: dict[str, CloudphoneProcess],
) -> None:
    """SIGTERM one worker mid-flight: it exits 0, and the other finishes every saga."""
    user = auth("drain")
    async with httpx.AsyncClient(base_url=str(cluster["api"].base_url), timeout=10) as http:
        ids = await asyncio.gather(*(start_demo(http, user, work_ms=400) for _ in range(20)))
        await saga_until(http, user, ids[0], {"RUNNING", "COMPLETED"})
        code = await asyncio.to_thread(cluster["w1"].terminate, 20)
        assert code == 0, cluster["w1"].log()
        details = [await saga_until(http, user, saga_id, within=30) for saga_id in ids]
    assert {d["status"] for d in details} == {"COMPLETED"}
    assert "step_failed" not in {e["kind"] for d in details for e in d["history"]}
    assert '"worker stopped"' in cluster["w1"].log()
