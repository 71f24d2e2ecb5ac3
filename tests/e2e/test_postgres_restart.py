"""PostgreSQL restarts under load: ``serve --no-worker`` and 3 workers live through it.

Everything runs on a private cluster (``tests.support.postgres_server``): the shared server is
never restarted. While the database is down, requests answer 503 with ``Retry-After`` (never
500) and ``/readyz`` says so; afterwards every saga started completes, and no process was
restarted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudphone.domain import Role
from tests.support.http import kinds, saga_until
from tests.support.postgres_server import PostgresServer, private_postgres
from tests.support.server import (
    WORKER_READY,
    CloudphoneProcess,
    auth,
    child_env,
    spawn_worker,
    start_serve,
)
from tests.support.waiting import eventually

pytestmark = [pytest.mark.postgres, pytest.mark.chaos]

USER = auth("restart-user")
ADMIN = auth("restart-admin", Role.ADMIN)
PAYMENTS = 12
DEMOS = 60


@dataclass
class Deployment:
    """The private cluster, the API and its workers."""

    postgres: PostgresServer
    api: CloudphoneProcess
    workers: list[CloudphoneProcess]
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def processes(self) -> list[CloudphoneProcess]:
        return [self.api, *self.workers]

    def logs(self) -> str:
        return "\n".join(f"--- {p.args} (pid {p.pid})\n{p.log(3000)}" for p in self.processes)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with private_postgres() as postgres:
        env = child_env(tmp_path / "var", postgres.create_database("cloudphone_restart"))
        processes: list[CloudphoneProcess] = []
        try:
            api = start_serve(tmp_path, env, "--no-worker", name="api")
            processes.append(api)
            workers = [spawn_worker(tmp_path, env, f"w{i}") for i in range(3)]
            processes += workers
            for worker in workers:
                worker.wait_log(WORKER_READY)
            yield Deployment(postgres, api, workers, {str(p.args): p.pid for p in processes})
        finally:
            for process in processes:
                process.stop()


@dataclass
class Client:
    """Sends each POST until it is accepted, retrying 503s as told by ``Retry-After``."""

    http: httpx.AsyncClient
    refusals: list[httpx.Response] = field(default_factory=list)
    unexpected: list[httpx.Response] = field(default_factory=list)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {**USER, "Idempotency-Key": uuid.uuid4().hex}
        while True:
            try:
                response = await self.http.post(path, json=body, headers=headers)
            except httpx.TransportError:  # pragma: no cover - the API itself never goes down
                await asyncio.sleep(0.2)
                continue
            if response.status_code in (200, 201, 202):
                result: dict[str, Any] = response.json()
                return result
            if response.status_code != 503:
                self.unexpected.append(response)
                raise AssertionError(f"POST {path}: {response.status_code} {response.text}")
            self.refusals.append(response)
            # As a client is told to: wait Retry-After seconds, then send the same request.
            await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), 2.0))


async def paid_payment(client: Client) -> str:
    order = await client.post("/orders", {"amount": 1000, "currency": "EUR", "description": "x"})
    payment = await client.post(f"/orders/{order['id']}/pay", {})
    assert payment["status"] == "SUCCESS", payment
    return str(payment["id"])


async def load(client: Client, payments: list[str]) -> tuple[list[str], list[str]]:
    """Demo sagas and refunds, a few at a time over about 6 s; returns their saga ids."""
    demos: list[str] = []
    refunds: list[str] = []

    async def demo() -> None:
        demos.append((await client.post("/demo", {"work_ms": 30}))["id"])

    async def refund(payment_id: str) -> None:
        accepted = await client.post(f"/payments/{payment_id}/refunds", {"amount": 400})
        refunds.append(accepted.get("saga_id") or accepted["refund"]["saga_id"])

    tasks = []
    pending = list(payments)
    for i in range(DEMOS):
        tasks.append(asyncio.create_task(demo()))
        if i % (DEMOS // PAYMENTS) == 0 and pending:
            tasks.append(asyncio.create_task(refund(pending.pop())))
        await asyncio.sleep(0.1)  # a steady arrival rate, not a burst
    await asyncio.gather(*tasks)
    return demos, refunds


async def database_down_meanwhile(deployment: Deployment, http: httpx.AsyncClient) -> None:
    """Stop PostgreSQL 1.5 s into the load, check /readyz says so, start it 1 s later."""
    await asyncio.sleep(1.5)  # let the load get going
    await asyncio.to_thread(deployment.postgres.stop, "fast")
    ready = await http.get("/readyz", headers=ADMIN)
    assert ready.status_code == 503, ready.text
    assert ready.json()["database"] == "failing", ready.text
    await asyncio.sleep(1.0)  # the outage itself
    await asyncio.to_thread(deployment.postgres.start)


@pytest.mark.timeout(150)
async def test_sagas_started_over_http_all_complete_across_a_postgres_restart(
    deployment: Deployment,
) -> None:
    """503 + Retry-After during the outage, then every saga COMPLETED, no process restarted."""
    async with httpx.AsyncClient(base_url=str(deployment.api.base_url), timeout=10) as http:
        client = Client(http)
        payments = [await paid_payment(client) for _ in range(PAYMENTS)]
        (demos, refunds), _ = await asyncio.gather(
            load(client, payments), database_down_meanwhile(deployment, http)
        )
        details = [await saga_until(http, USER, i, within=60) for i in demos + refunds]
        await eventually(
            lambda: http.get("/readyz", headers=ADMIN),
            lambda response: response.status_code == 200,
            timeout=10,
            what="/readyz ready again",
        )

    assert client.unexpected == []
    assert client.refusals, "no request met the outage: the test did not test it"
    for refused in client.refusals:
        assert refused.headers.get("Retry-After"), refused.headers
        assert refused.json()["error"]["code"] == "database_unavailable", refused.text
    assert Counter(d["status"] for d in details) == {"COMPLETED": len(demos) + len(refunds)}, [
        (d["id"], d["status"], d["error"]) for d in details if d["status"] != "COMPLETED"
    ]
    for detail in details:
        assert "lease_takeover" not in kinds(detail), detail["history"]
    for detail in details[: len(demos)]:  # demo steps touch no database: nothing may fail
        assert "step_failed" not in kinds(detail), detail["history"]
    assert all(p.alive for p in deployment.processes), deployment.logs()
    assert {str(p.args): p.pid for p in deployment.processes} == deployment.pids
