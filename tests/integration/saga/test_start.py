"""Starting runs: idempotency keys, joining the caller's transaction, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from cloudphone.saga import (
    EventKind,
    InvalidSagaInputError,
    RetryPolicy,
    Saga,
    SagaEngine,
    SagaNotFoundError,
    SagaStatus,
    StepContext,
    UnknownSagaTypeError,
)
from tests.support.sagas import Recorder, build_saga


async def test_same_idempotency_key_returns_the_first_run(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Repeated and concurrent starts with one key create one run; other keys are separate."""
    recorder = Recorder()
    saga = build_saga(f"idem_{unique}", recorder)
    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.worker():
        ids = await asyncio.gather(
            *(engine.start(saga.name, {"n": i}, idempotency_key="k1") for i in range(10))
        )
        other = await engine.start(saga.name, {"n": 99}, idempotency_key="k2")
        assert len(set(ids)) == 1
        assert other != ids[0]
        first = await engine.wait(ids[0], timeout=timedelta(seconds=10))
        await engine.wait(other, timeout=timedelta(seconds=10))
        again = await engine.start(saga.name, {"n": 100}, idempotency_key="k1")
    assert again == ids[0]
    found = await engine.find(saga.name, "k1")
    assert found is not None
    assert found.id == ids[0]
    assert await engine.find(saga.name, "never-used") is None
    assert await engine.find("another_type", "k1") is None
    assert first.status is SagaStatus.COMPLETED
    assert first.idempotency_key == "k1"
    assert recorder.forward().count("A") == 2
    assert (
        engine.metrics.registry.get_sample_value("saga_started_total", {"saga_type": saga.name})
        == 2
    )


async def test_start_joins_the_callers_transaction(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A run started with session= exists only if the caller's transaction commits."""
    saga = build_saga(f"txn_{unique}", Recorder())
    engine = make_engine([saga])
    await engine.create_schema()
    table = f"orders_{unique}"
    async with engine.db.begin() as conn:
        await conn.execute(sa.text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)"))

    started: list[str] = []

    async def start_then_fail() -> None:
        async with engine.db.begin() as conn:
            await conn.execute(sa.text(f"INSERT INTO {table} (id) VALUES (1)"))
            started.append(await engine.start(saga.name, {}, session=conn))
            raise RuntimeError("caller failed after starting the saga")

    with pytest.raises(RuntimeError, match="caller failed"):
        await start_then_fail()
    with pytest.raises(SagaNotFoundError):
        await engine.get(started[0])

    async with engine.worker():
        async with engine.db.begin() as conn:
            await conn.execute(sa.text(f"INSERT INTO {table} (id) VALUES (2)"))
            committed = await engine.start(saga.name, {}, session=conn)
        run = await engine.wait(committed, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED
    async with engine.db.read() as conn:
        rows = (await conn.execute(sa.text(f"SELECT id FROM {table}"))).scalars().all()
    assert rows == [2]


async def test_run_started_in_a_transaction_is_picked_up_at_commit(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """start(session=...) wakes the local worker: no wait for the (here 30 s) poll interval."""
    saga = build_saga(f"txnwake_{unique}", Recorder())
    engine = make_engine([saga], poll_interval=timedelta(seconds=30))
    await engine.create_schema()
    async with engine.worker():
        async with engine.db.begin() as conn:
            saga_id = await engine.start(saga.name, {}, session=conn)
        run = await engine.wait(saga_id, timeout=timedelta(seconds=5))
    assert run.status is SagaStatus.COMPLETED


async def test_a_start_is_counted_once_its_transaction_commits(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """saga_started_total counts runs that exist: not a start whose transaction rolled back."""
    saga = build_saga(f"count_{unique}", Recorder())
    engine = make_engine([saga])
    await engine.create_schema()

    def started() -> float | None:
        labels = {"saga_type": saga.name}
        return engine.metrics.registry.get_sample_value("saga_started_total", labels)

    async def start_then_refuse() -> None:
        async with engine.db.begin() as conn:
            first = await engine.start_run(saga.name, {}, idempotency_key="k", session=conn)
            assert first.created
            raise RuntimeError("refused after the start")

    with pytest.raises(RuntimeError, match="refused after the start"):
        await start_then_refuse()
    assert started() in (None, 0)
    assert await engine.list(saga_type=saga.name) == []
    async with engine.db.begin() as conn:
        second = await engine.start_run(saga.name, {}, idempotency_key="k", session=conn)
        assert started() in (None, 0)  # not before the commit
    assert started() == 1
    repeat = await engine.start_run(saga.name, {}, idempotency_key="k")
    assert (repeat.id, repeat.created) == (second.id, False)
    assert started() == 1


async def test_bad_start_input_is_refused(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Unknown types, non-JSON data and oversized keys are refused before anything is written."""
    saga = build_saga(f"bad_{unique}", Recorder())
    engine = make_engine([saga])
    await engine.create_schema()
    with pytest.raises(UnknownSagaTypeError, match="unknown saga type"):
        await engine.start("no_such_saga", {})
    with pytest.raises(InvalidSagaInputError, match="must be JSON"):
        await engine.start(saga.name, {"when": object()})
    with pytest.raises(InvalidSagaInputError, match="must be a dict"):
        await engine.start(saga.name, ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(InvalidSagaInputError, match="1-255"):
        await engine.start(saga.name, {}, idempotency_key="x" * 256)
    assert await engine.list(saga_type=saga.name) == []


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        ({"text": "a\x00b"}, {}, r"data\['text'\] contains a NUL character"),
        ({"a": [{"\x00": 1}]}, {}, r"data\['a'\]\[0\] has a key with a NUL character"),
        ({}, {"idempotency_key": "k\x00"}, "idempotency_key contains a NUL character"),
        ({}, {"started_by": "u\x00"}, "started_by contains a NUL character"),
    ],
    ids=["value", "key", "idempotency-key", "started-by"],
)
async def test_nul_characters_never_reach_the_database(
    make_engine: Callable[..., SagaEngine],
    unique: str,
    data: dict[str, Any],
    options: dict[str, Any],
    message: str,
) -> None:
    """PostgreSQL cannot store NUL (SQLite would): refused alike on both, nothing written."""
    saga = build_saga(f"nul_{unique}", Recorder())
    engine = make_engine([saga])
    await engine.create_schema()
    with pytest.raises(InvalidSagaInputError, match=message):
        await engine.start(saga.name, data, **options)
    assert await engine.list(saga_type=saga.name) == []
    # Text that merely looks like the escape is data like any other.
    saga_id = await engine.start(saga.name, {"text": "\\u0000"})
    assert (await engine.get(saga_id)).data == {"text": "\\u0000"}


async def test_non_json_step_output_fails_without_retrying(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A step returning non-JSON data fails once, non-retryably, with a clear error."""
    saga = Saga(f"nonjson_{unique}")
    attempts: list[int] = []

    @saga.step("A")
    async def a(ctx: StepContext) -> dict[str, object]:
        attempts.append(ctx.attempt)
        return {"at": object()}

    engine = make_engine([saga])
    await engine.create_schema()
    async with engine.worker():
        saga_id = await engine.start(saga.name, {})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert attempts == [1]
    assert run.status is SagaStatus.COMPENSATED
    assert run.error is not None
    assert run.error.type == "StepOutputError"
    assert "not JSON" in run.error.message
    assert "'A'" in run.error.message


async def test_step_outputs_and_errors_with_nul_are_stored_safely(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A NUL in a step's output fails the step; one in an error message is stored escaped."""
    saga = Saga(f"nulstep_{unique}")

    @saga.step("A")
    async def a(ctx: StepContext) -> dict[str, object]:
        return {"echo": "a\x00b"}

    other = Saga(f"nulerror_{unique}", retry=RetryPolicy(max_attempts=1))

    @other.step("B")
    async def b(ctx: StepContext) -> None:
        raise ValueError("provider said a\x00b")

    engine = make_engine([saga, other])
    await engine.create_schema()
    async with engine.worker():
        output_run = await engine.wait(
            await engine.start(saga.name, {}), timeout=timedelta(seconds=10)
        )
        error_run = await engine.wait(
            await engine.start(other.name, {}), timeout=timedelta(seconds=10)
        )
    assert output_run.status is SagaStatus.COMPENSATED
    assert output_run.error is not None
    assert "output['echo'] contains a NUL character" in output_run.error.message
    assert error_run.status is SagaStatus.COMPENSATED
    assert error_run.error is not None
    assert error_run.error.message == "provider said a\\x00b"


async def test_list_filters_and_history_of_unknown_run(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """list() filters by type, status and starter; reading an unknown id raises."""
    saga = build_saga(f"list_{unique}", Recorder())
    engine = make_engine([saga])
    await engine.create_schema()
    mine = await engine.start(saga.name, {}, started_by=f"alice-{unique}")
    await engine.start(saga.name, {}, started_by=f"bob-{unique}")
    runs = await engine.list(saga_type=saga.name, started_by=f"alice-{unique}")
    assert [r.id for r in runs] == [mine]
    assert len(await engine.list(saga_type=saga.name, status=SagaStatus.PENDING)) == 2
    assert await engine.list(saga_type=saga.name, status=SagaStatus.COMPLETED) == []
    events = await engine.history(mine)
    assert [e.kind for e in events] == [EventKind.SAGA_STARTED]
    with pytest.raises(SagaNotFoundError):
        await engine.history("00000000-0000-0000-0000-000000000000")
