"""A run in flight across migration 0011 (outputs kept per step) finishes on the new code."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from cloudphone import schema
from cloudphone.saga import Saga, SagaEngine, SagaStatus, StepContext
from cloudphone.saga.store.tables import saga_events, saga_runs
from tests.support.databases import fresh_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path, "cloudphone_upgrade") as url:
        yield url


class Order(BaseModel):
    order_id: str


def old_run_at_charge(url: str, run_id: str) -> None:
    """A run as 0010 stored it: RESERVE done, its output merged into ``data``, due at CHARGE."""
    now = datetime.now(UTC)
    engine = sa.create_engine(schema.sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(saga_runs).values(
                    id=run_id, saga_type="legacy", status="RUNNING", current_step="CHARGE",
                    attempt=1, data={"order_id": "o1", "reservation": "res-1"}, epoch=2,
                    deadline_noted=False, cancel_requested=False, last_seq=2, created_at=now,
                    updated_at=now, next_run_at=now,
                )
            )  # fmt: skip
            conn.execute(
                sa.insert(saga_events),
                [
                    {"saga_id": run_id, "seq": 1, "kind": "saga_started", "detail": {}, "at": now},
                    {
                        "saga_id": run_id,
                        "seq": 2,
                        "kind": "step_succeeded",
                        "step": "RESERVE",
                        "attempt": 1,
                        "detail": {"output": {"reservation": "res-1"}},
                        "at": now,
                    },
                ],
            )
    finally:
        engine.dispose()


def legacy_saga(seen: list[Any]) -> Saga[Order]:
    """The saga as the new release defines it: typed input, earlier outputs read by step."""
    saga = Saga("legacy", input=Order)

    @saga.step("RESERVE")
    async def reserve(ctx: StepContext[Order]) -> dict[str, Any]:
        return {"reservation": f"res-{ctx.input.order_id}"}

    @saga.step("CHARGE")
    async def charge(ctx: StepContext[Order]) -> dict[str, Any]:
        seen.append((ctx.input, ctx.output("RESERVE")["reservation"], dict(ctx.data)))
        return {"charged": True}

    @saga.step("NOTIFY")
    async def notify(ctx: StepContext[Order]) -> None:
        seen.append(ctx.output("CHARGE"))

    return saga


async def test_a_run_started_before_the_upgrade_finishes_after_it(empty_url: str) -> None:
    await asyncio.to_thread(schema.upgrade, empty_url, "0010")
    run_id = str(uuid.uuid4())
    old_run_at_charge(empty_url, run_id)
    await asyncio.to_thread(schema.upgrade, empty_url)

    seen: list[Any] = []
    engine = SagaEngine(empty_url, [legacy_saga(seen)], worker_id=f"w-{run_id[:8]}")
    try:
        async with engine.worker(concurrency=2):
            run = await engine.wait(run_id, timeout=timedelta(seconds=10))
    finally:
        await engine.close()
    assert run.status is SagaStatus.COMPLETED
    merged = {"order_id": "o1", "reservation": "res-1"}
    assert seen == [(Order(order_id="o1"), "res-1", merged), {"charged": True}]
    assert run.input == merged, "the data of an old run stays its input"
    assert run.outputs == {"CHARGE": {"charged": True}, "NOTIFY": None}
    assert run.data == {**merged, "charged": True}
