"""Progress writes fenced by (epoch, last_seq): a repeat after a lost answer applies once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from cloudphone.saga import EventKind, SagaEngine, SagaRun
from cloudphone.saga.decide import on_step_success
from cloudphone.saga.errors import LeaseLostError, StaleStateError
from cloudphone.saga.progress import state_of
from cloudphone.saga.testing import ManualClock
from tests.support.sagas import Recorder, build_saga


async def claimed(engine: SagaEngine, saga_name: str, worker: str) -> SagaRun:
    run_id = await engine.start(saga_name, {})
    (claim,) = await engine.store.claim(worker, 1, [saga_name], engine.clock.now())
    assert claim.run.id == run_id
    return claim.run


async def test_a_repeated_write_is_recognised_not_applied_twice(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """The same progress sent again at the same seq answers Committed; its events exist once."""
    clock = ManualClock()
    saga = build_saga(f"fence_{unique}", Recorder())
    engine = make_engine([saga], clock=clock)
    await engine.create_schema()
    run = await claimed(engine, saga.name, f"w-{unique}")
    progress = on_step_success(state_of(run, saga), saga, {"A": 1}, clock.now(), clock.now())

    first = await engine.store.commit(run.id, run.epoch, progress, run.last_seq)
    again = await engine.store.commit(run.id, run.epoch, progress, run.last_seq)

    assert again == first
    assert first.last_seq == run.last_seq + len(progress.events)
    events = await engine.history(run.id)
    assert [e.kind for e in events] == [EventKind.SAGA_STARTED, EventKind.STEP_SUCCEEDED]
    assert (await engine.store.landed(run.id, run.epoch, run.last_seq, progress)) == first
    assert (await engine.store.landed(run.id, run.epoch, first.last_seq, None)) is None


async def test_an_operator_cancel_request_does_not_fence_the_owner_off(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """A cancel request moves last_seq under the owner: its write still lands, after it."""
    clock = ManualClock()
    saga = build_saga(f"cancelfence_{unique}", Recorder())
    engine = make_engine([saga], clock=clock)
    await engine.create_schema()
    run = await claimed(engine, saga.name, f"w-{unique}")
    await engine.cancel(run.id)
    progress = on_step_success(state_of(run, saga), saga, {"A": 1}, clock.now(), clock.now())

    committed = await engine.store.commit(run.id, run.epoch, progress, run.last_seq)

    assert committed.cancel_requested
    kinds = [e.kind for e in await engine.history(run.id)]
    assert kinds == [EventKind.SAGA_STARTED, EventKind.CANCEL_REQUESTED, EventKind.STEP_SUCCEEDED]
    assert committed.last_seq == 3


async def test_a_different_write_at_the_same_seq_is_stale_and_a_new_epoch_is_lost(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Another progress already landed at that seq: StaleStateError; a bumped epoch: lease lost."""
    clock = ManualClock()
    saga = build_saga(f"stale_{unique}", Recorder())
    engine = make_engine([saga], clock=clock)
    await engine.create_schema()
    run = await claimed(engine, saga.name, f"w-{unique}")
    state = state_of(run, saga)
    landed = on_step_success(state, saga, {"A": 1}, clock.now(), clock.now())
    await engine.store.commit(run.id, run.epoch, landed, run.last_seq)
    clock.advance(timedelta(milliseconds=5))
    redone = on_step_success(state, saga, {"A": 2}, clock.now(), clock.now())

    with pytest.raises(StaleStateError):
        await engine.store.commit(run.id, run.epoch, redone, run.last_seq)
    with pytest.raises(LeaseLostError):
        await engine.store.commit(run.id, run.epoch + 1, redone, run.last_seq)
    assert [e.kind for e in await engine.history(run.id)].count(EventKind.STEP_SUCCEEDED) == 1
    assert (await engine.get(run.id)).data == {"A": 1}
