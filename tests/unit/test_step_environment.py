"""StepEnvironment: one step's context, and one step run as the engine would run it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloudphone.saga import Database, ErrorInfo, Saga, StepContext, StepOutputError
from cloudphone.saga.testing import StepEnvironment

notes_metadata = sa.MetaData()
notes = sa.Table(
    "notes",
    notes_metadata,
    sa.Column("saga_id", sa.String(36), primary_key=True),
    sa.Column("text", sa.String(100), nullable=False),
)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'steps.db'}")
    async with database.begin() as conn:
        await conn.run_sync(notes_metadata.create_all)
    yield database
    await database.dispose()


def note_saga() -> Saga:
    """WRITE inserts a note (transactional); its compensation deletes it; SHOUT reads it."""
    saga = Saga("notes")

    @saga.step("WRITE", transactional=True)
    async def write(ctx: StepContext) -> dict[str, Any]:
        await ctx.session.execute(
            sa.insert(notes).values(saga_id=ctx.saga_id, text=ctx.data["text"])
        )
        if ctx.data.get("fail"):
            raise RuntimeError("after the write")
        return {"written": True}

    @write.compensate
    async def erase(ctx: StepContext) -> None:
        await ctx.session.execute(sa.delete(notes).where(notes.c.saga_id == ctx.saga_id))

    @saga.step("SHOUT")
    async def shout(ctx: StepContext) -> dict[str, Any]:
        if ctx.data.get("bad_output"):
            return {"at": datetime.now(UTC)}
        return {"shout": ctx.data["text"].upper(), "attempt": ctx.attempt}

    return saga


async def stored(db: Database) -> list[str]:
    async with db.read() as conn:
        return list((await conn.execute(sa.select(notes.c.text))).scalars())


def test_context_carries_what_the_engine_would_give() -> None:
    deadline = datetime(2030, 1, 1, tzinfo=UTC)
    env = StepEnvironment(
        data={"refund_id": "r1"}, saga_id="run-1", saga_type="refund", deadline=deadline
    )
    ctx = env.context("CALL", attempt=3)
    assert (ctx.saga_id, ctx.saga_type, ctx.step, ctx.attempt) == ("run-1", "refund", "CALL", 3)
    assert (ctx.idempotency_key, ctx.deadline, ctx.compensating) == ("run-1:CALL", deadline, False)
    assert (ctx.compensation_cause, ctx.error) == (None, None)
    assert dict(ctx.data) == {"refund_id": "r1"}
    with pytest.raises(TypeError):
        ctx.data["refund_id"] = "changed"  # type: ignore[index]
    with pytest.raises(RuntimeError, match="not transactional"):
        _ = ctx.session
    error = ErrorInfo("ProviderDown", "503", "CALL")
    undo = env.context("CALL", compensating=True, error=error)
    assert (undo.idempotency_key, undo.compensation_cause, undo.error) == (
        "run-1:CALL:undo",
        "failed",
        error,
    )
    assert (
        env.context("CALL", compensating=True, compensation_cause="timed_out").compensation_cause
        == "timed_out"
    )
    with pytest.raises(ValueError, match="start at 1"):
        env.context("CALL", attempt=0)


async def test_run_commits_a_transactional_step_and_merges_its_output(db: Database) -> None:
    env = StepEnvironment(note_saga(), {"text": "hi"}, database=db)
    assert await env.run("WRITE") == {"written": True}
    assert await stored(db) == ["hi"]
    assert await env.run("SHOUT", attempt=2) == {"shout": "HI", "attempt": 2}
    assert env.data == {"text": "hi", "written": True, "shout": "HI", "attempt": 2}
    assert await env.run("WRITE", compensating=True) is None
    assert await stored(db) == []


async def test_run_rolls_back_a_failed_transactional_step(db: Database) -> None:
    env = StepEnvironment(note_saga(), {"text": "hi", "fail": True}, database=db)
    with pytest.raises(RuntimeError, match="after the write"):
        await env.run("WRITE")
    assert await stored(db) == []
    assert "written" not in env.data


async def test_run_refuses_what_the_engine_refuses(db: Database) -> None:
    saga = note_saga()
    with pytest.raises(StepOutputError, match="not JSON"):
        await StepEnvironment(saga, {"text": "x", "bad_output": True}).run("SHOUT")
    with pytest.raises(RuntimeError, match="database="):
        await StepEnvironment(saga, {"text": "x"}).run("WRITE")
    with pytest.raises(ValueError, match="no compensation"):
        await StepEnvironment(saga, {"text": "x"}).run("SHOUT", compensating=True)
    with pytest.raises(ValueError, match="no step 'NOPE'"):
        await StepEnvironment(saga).run("NOPE")
    with pytest.raises(ValueError, match="needs the saga"):
        await StepEnvironment(data={}).run("SHOUT")


async def test_run_keeps_each_output_under_its_step(db: Database) -> None:
    env = StepEnvironment(note_saga(), {"text": "hi"}, database=db)
    await env.run("WRITE")
    ctx = env.context("SHOUT")
    assert ctx.output("WRITE") == {"written": True}
    assert (ctx.input, dict(ctx.data)) == ({"text": "hi"}, {"text": "hi", "written": True})
    await env.run("SHOUT")
    assert env.outputs == {"WRITE": {"written": True}, "SHOUT": {"shout": "HI", "attempt": 1}}
    assert env.input == {"text": "hi"}


def test_earlier_outputs_can_be_given_up_front() -> None:
    env = StepEnvironment(note_saga(), {"text": "x"}, outputs={"WRITE": {"written": True}})
    assert env.context("SHOUT").output("WRITE") == {"written": True}
    assert env.data == {"text": "x", "written": True}


async def test_a_step_may_not_return_a_key_of_the_input() -> None:
    saga = Saga("clash")

    @saga.step("A")
    async def a(ctx: StepContext) -> dict[str, Any]:
        return {"text": "mine"}

    with pytest.raises(StepOutputError, match="'text', which the saga input already has"):
        await StepEnvironment(saga, {"text": "x"}).run("A")


async def test_a_run_from_before_per_step_outputs_reads_its_merged_data() -> None:
    """No outputs for a step done already: it ran before they were kept (see outputs.py)."""
    saga = Saga("old")

    @saga.step("A")
    async def a(ctx: StepContext) -> dict[str, Any]:
        return {"a": 1}

    @saga.step("B")
    async def b(ctx: StepContext) -> dict[str, Any]:
        return {"a": ctx.output("A")["a"] + 1, "b": True}

    env = StepEnvironment(saga, {"x": 1, "a": 1})  # A's output merged into the old data
    assert await env.run("B") == {"a": 2, "b": True}, "its old data counted as an input clash"
    assert env.data == {"x": 1, "a": 2, "b": True}


async def test_run_runs_queued_writes_after_the_body_in_its_transaction(db: Database) -> None:
    """ctx.write in the test kit: committed with the step; a failing one fails it, none kept."""
    saga = Saga("queued_notes")

    @saga.step("QUEUE", transactional=True)
    async def queue(ctx: StepContext) -> dict[str, Any]:
        ctx.write(sa.insert(notes).values(saga_id=ctx.saga_id, text="first"))
        if ctx.data.get("clash"):  # the same key again: the second write fails
            ctx.write(sa.insert(notes).values(saga_id=ctx.saga_id, text="again"))
        return {"queued": True}

    assert await StepEnvironment(saga, {}, saga_id="a", database=db).run("QUEUE") == {
        "queued": True
    }
    assert await stored(db) == ["first"]
    with pytest.raises(sa.exc.IntegrityError):
        await StepEnvironment(saga, {"clash": True}, saga_id="b", database=db).run("QUEUE")
    assert await stored(db) == ["first"], "the failed step's first write rolled back with it"
