"""The store contract, part 6: a step transaction runs the writes its step queued.

``tx.commit(..., writes)`` runs them in order, after what the step sent on ``tx.session``, and
they commit if and only if the progress does: a fenced progress (stale epoch or ``last_seq``)
commits neither, a failing write fails with QueuedWriteError and commits nothing. On
PostgreSQL a lone step's one write goes in its progress statement: the fence inside it is
what is tested there. Runs on the memory store (with a database), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import random
from datetime import timedelta

import pytest
import sqlalchemy as sa

from cloudphone.saga.context import QueuedWrite
from cloudphone.saga.errors import (
    LeaseLostError,
    NonRetryableError,
    QueuedWriteError,
    StaleStateError,
)
from cloudphone.saga.store.memory import MemoryStore
from cloudphone.saga.testing import ManualClock
from tests.integration.saga.test_store_contract import succeeded
from tests.support.stores import Backend, contract_effects


def effect(saga_id: str, **values: object) -> QueuedWrite:
    return QueuedWrite(sa.insert(contract_effects).values(saga_id=saga_id, **values))


@pytest.mark.parametrize("alone", [False, True])
@pytest.mark.parametrize("fence", [None, "epoch", "seq"])
async def test_a_queued_write_commits_with_the_progress_or_not_at_all(
    backend: Backend, fence: str | None, alone: bool
) -> None:
    run = await backend.insert(owner="w1")
    epoch = run.epoch - 1 if fence == "epoch" else run.epoch
    seq = run.last_seq - 1 if fence == "seq" else run.last_seq
    refused = {None: contextlib.nullcontext(), "epoch": pytest.raises(LeaseLostError)}
    with refused.get(fence, pytest.raises(StaleStateError)):
        async with backend.store.step_transaction(alone) as tx:
            progress = succeeded(backend, run, {"wrote": True})
            await tx.commit(run.id, epoch, progress, seq, [effect(run.id)])
    after = await backend.read(run.id)
    if fence is not None:
        assert (await backend.effects(run.id), after) == (0, run), "half of it survived"
        return
    assert await backend.effects(run.id) == 1
    assert (after.current_step, after.data) == ("B", {"n": 1, "wrote": True})


async def test_a_queued_write_that_landed_is_recognised_after_a_lost_answer(
    backend: Backend,
) -> None:
    """What a runner asks after a lost connection: the write and its progress are one."""
    run = await backend.insert(owner="w1")
    progress = succeeded(backend, run, {"wrote": True})
    assert await backend.store.landed(run.id, run.epoch, run.last_seq, progress) is None
    async with backend.store.step_transaction() as tx:
        committed = await tx.commit(run.id, run.epoch, progress, run.last_seq, [effect(run.id)])
    landed = await backend.store.landed(run.id, run.epoch, run.last_seq, progress)
    assert (landed, await backend.effects(run.id)) == (committed, 1)


async def test_queued_writes_run_in_order_after_the_sessions_statements(backend: Backend) -> None:
    """Each statement renames the row the one before it wrote: only in order does it arrive."""
    run = await backend.insert(owner="w1")
    first, second = f"a-{run.id[:30]}", f"b-{run.id[:30]}"
    c = contract_effects.c
    async with backend.store.step_transaction() as tx:
        await tx.session.execute(sa.insert(contract_effects).values(saga_id=first))
        writes = [
            QueuedWrite(
                sa.update(contract_effects).where(c.saga_id == sa.bindparam("old")),
                {"old": first, "saga_id": second},
            ),
            QueuedWrite(
                sa.text("UPDATE contract_effects SET saga_id = :new WHERE saga_id = :old"),
                {"old": second, "new": run.id},
            ),
        ]
        await tx.commit(run.id, run.epoch, succeeded(backend, run), run.last_seq, writes)
    assert [await backend.effects(s) for s in (first, second, run.id)] == [0, 0, 1]
    assert (await backend.read(run.id)).current_step == "B"


@pytest.mark.parametrize("with_session", [False, True])
async def test_a_failing_queued_write_commits_nothing(backend: Backend, with_session: bool) -> None:
    run = await backend.insert(owner="w1")
    taken = random.randrange(10**8, 2**31)  # PostgreSQL is shared by every test
    async with backend.business.begin() as conn:
        await conn.execute(sa.insert(contract_effects).values(id=taken, saga_id="taken"))

    async def step() -> None:
        async with backend.store.step_transaction() as tx:
            if with_session:
                await tx.session.execute(sa.insert(contract_effects).values(saga_id=run.id))
            writes = [effect(run.id, id=taken)]
            await tx.commit(run.id, run.epoch, succeeded(backend, run), run.last_seq, writes)

    with pytest.raises(QueuedWriteError) as raised:
        await step()
    error = raised.value.error
    assert isinstance(error, sa.exc.IntegrityError), repr(error)
    assert "INSERT" not in str(error), str(error)
    assert str(taken) not in str(error), str(error)
    assert (await backend.effects(run.id), await backend.read(run.id)) == (0, run)


async def test_a_store_without_a_database_refuses_queued_writes() -> None:
    """The memory store without a database cannot run them: it says so, it drops nothing."""
    clock = ManualClock()
    store = MemoryStore(clock, timedelta(seconds=10))
    async with store.step_transaction() as tx:
        with pytest.raises(NonRetryableError, match="needs a database"):
            _ = tx.session
        with pytest.raises(QueuedWriteError) as raised:
            await tx.commit("no-run", 1, None, None, [effect("x")])  # type: ignore[arg-type]
    assert isinstance(raised.value.error, NonRetryableError)
    assert "ctx.write" in str(raised.value.error)
