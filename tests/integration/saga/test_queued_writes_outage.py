"""``ctx.write`` on PostgreSQL when the connection fails in the combined statement.

The statement is atomic, so after a lost connection the runner's question "did my progress
land?" answers for the business write too: not landed, the attempt runs again (same attempt
number) and writes once; landed but the answer lost, it is not run again.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import make_url

from cloudphone.saga import EventKind, Saga, SagaEngine, SagaStatus
from cloudphone.saga.errors import DatabaseUnavailableError
from tests.integration.saga.test_queued_writes import (
    SECRET,
    WAIT,
    Plan,
    QueryLog,
    four_steps,
    on_postgres,
    rows,
    steps_of,
)
from tests.support.pg_cut import losing_one_answer
from tests.support.waiting import eventually

pytestmark = pytest.mark.postgres


@pytest.fixture
def plan(unique: str) -> Plan:
    return Plan(table=f"lost_rows_{unique}")


@pytest.fixture
def log() -> QueryLog:
    return QueryLog()


async def run_through_loss(engine: SagaEngine, saga: Saga, deferred: bool) -> tuple[str, Any]:
    """Start a run whose T1 statement fails with its connection, and wait for its end.

    ``deferred``: the run's insert rides in T1's statement (saga/pending.py), so start()
    cannot know whether the run exists and raises DatabaseUnavailableError; its runner goes
    on and finds out, and the run is found by listing.
    """
    async with engine.worker():
        if not deferred:
            run_id = await engine.start(saga.name, {})
        else:
            with pytest.raises(DatabaseUnavailableError):
                await engine.start(saga.name, {})

            async def listed() -> list[Any]:
                return await engine.list(saga_type=saga.name)

            (found,) = await eventually(listed, lambda runs: len(runs) == 1, what="the run")
            run_id = found.id
        return run_id, await engine.wait(run_id, timeout=WAIT)


def outages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "database unavailable" in r.getMessage()]


@pytest.mark.parametrize("deferred", [False, True], ids=["inserted", "insert_in_t1"])
async def test_a_connection_lost_in_the_combined_statement_runs_the_attempt_again(
    postgres_url: str,
    unique: str,
    plan: Plan,
    log: QueryLog,
    caplog: pytest.LogCaptureFixture,
    deferred: bool,
) -> None:
    """The write kills its own backend: nothing landed, so attempt 1 runs again, once."""
    plan.t1_kill_once = True
    saga = four_steps(f"queued_{unique}", plan)
    async with on_postgres(
        postgres_url, saga, plan, log, unique, insert_with_first_step=deferred
    ) as engine:
        run_id, run = await run_through_loss(engine, saga, deferred)
        assert run.status is SagaStatus.COMPLETED
        # asyncpg forgets a killed connection's log: the outage's says where it struck.
        lost = outages(caplog)
        assert len(lost) == 1, lost
        assert "step write" in lost[0], "not in the combined statement"
        assert await rows(engine, plan) == [
            (run_id, "T1", f"0:{SECRET}"),
            (run_id, "T3", "t"),
        ]
        events = await engine.history(run_id)
        assert steps_of(events, "T1") == [(EventKind.STEP_SUCCEEDED, 1)]
        assert run.outputs["T1"] == {"t1": 1}


@pytest.mark.parametrize("deferred", [False, True], ids=["inserted", "insert_in_t1"])
async def test_a_combined_write_whose_answer_was_lost_is_not_run_again(
    postgres_url: str,
    unique: str,
    plan: Plan,
    log: QueryLog,
    caplog: pytest.LogCaptureFixture,
    deferred: bool,
) -> None:
    """T1's statement commits, then its connection dies before the answer: counted once."""
    url = make_url(postgres_url)
    marker = "note) VALUES ($1, $2, $3)"  # T1's write (T3's is typed: $1::VARCHAR)
    saga = four_steps(f"queued_{unique}", plan)
    async with losing_one_answer(url.host or "127.0.0.1", url.port or 5432, marker) as cut:
        proxied = url.set(host="127.0.0.1", port=cut.port).render_as_string(False)
        async with on_postgres(
            proxied, saga, plan, log, unique, insert_with_first_step=deferred
        ) as engine:
            run_id, run = await run_through_loss(engine, saga, deferred)
            assert cut.done, "the answer was never cut"
            assert run.status is SagaStatus.COMPLETED
            lost = outages(caplog)
            assert len(lost) == 1, lost
            assert "step write" in lost[0], "not in the combined statement"
            assert plan.t1_bodies == 1, "T1 ran again though its write had landed"
            assert await rows(engine, plan) == [
                (run_id, "T1", f"0:{SECRET}"),
                (run_id, "T3", "t"),
            ]
            events = await engine.history(run_id)
            assert steps_of(events, "T1") == [(EventKind.STEP_SUCCEEDED, 1)]
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
