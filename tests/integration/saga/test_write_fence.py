"""Progress writes fenced by (epoch, last_seq): a repeat after a lost answer applies once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from cloudphone.saga import EventKind, Saga, SagaEngine, SagaRun
from cloudphone.saga.decide import on_step_success
from cloudphone.saga.errors import LeaseLostError, StaleStateError
from cloudphone.saga.progress import Progress, state_of
from cloudphone.saga.store.base import ClaimRequest
from cloudphone.saga.testing import ManualClock
from tests.support.sagas import Recorder, build_saga


@dataclass
class Claimed:
    """An engine on a manual clock, and one run of a 3-step saga claimed by a worker."""

    engine: SagaEngine
    clock: ManualClock
    saga: Saga
    run: SagaRun

    def success(self, output: dict[str, int]) -> Progress:
        """The progress of the first step succeeding with ``output``."""
        now = self.clock.now()
        return on_step_success(state_of(self.run, self.saga), self.saga, output, now, now)


async def claim_one(make_engine: Callable[..., SagaEngine], name: str) -> Claimed:
    clock = ManualClock()
    saga = build_saga(name, Recorder())
    engine = make_engine([saga], clock=clock)
    await engine.create_schema()
    run_id = await engine.start(saga.name, {})
    (claim,) = await engine.store.claim(ClaimRequest(f"w-{name}", 1, [saga.name], clock.now()))
    assert claim.run.id == run_id
    return Claimed(engine, clock, saga, claim.run)


async def test_a_repeated_write_is_recognised_not_applied_twice(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """The same progress sent again at the same seq answers Committed; its events exist once."""
    claimed = await claim_one(make_engine, f"fence_{unique}")
    engine, run, progress = claimed.engine, claimed.run, claimed.success({"A": 1})

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
    claimed = await claim_one(make_engine, f"cancelfence_{unique}")
    engine, run, progress = claimed.engine, claimed.run, claimed.success({"A": 1})
    await engine.cancel(run.id)

    committed = await engine.store.commit(run.id, run.epoch, progress, run.last_seq)

    assert committed.cancel_requested
    kinds = [e.kind for e in await engine.history(run.id)]
    assert kinds == [EventKind.SAGA_STARTED, EventKind.CANCEL_REQUESTED, EventKind.STEP_SUCCEEDED]
    assert committed.last_seq == 3


async def test_a_different_write_at_the_same_seq_is_stale_and_a_new_epoch_is_lost(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Another progress already landed at that seq: StaleStateError; a bumped epoch: lease lost."""
    claimed = await claim_one(make_engine, f"stale_{unique}")
    engine, run = claimed.engine, claimed.run
    await engine.store.commit(run.id, run.epoch, claimed.success({"A": 1}), run.last_seq)
    claimed.clock.advance(timedelta(milliseconds=5))
    redone = claimed.success({"A": 2})

    with pytest.raises(StaleStateError):
        await engine.store.commit(run.id, run.epoch, redone, run.last_seq)
    with pytest.raises(LeaseLostError):
        await engine.store.commit(run.id, run.epoch + 1, redone, run.last_seq)
    assert [e.kind for e in await engine.history(run.id)].count(EventKind.STEP_SUCCEEDED) == 1
    assert (await engine.get(run.id)).data == {"A": 1}


async def test_runs_of_a_claim_whose_answer_was_lost_are_claimed_again_as_fresh(
    postgres_url: str, unique: str
) -> None:
    """The worker claims again what its lost claim took: no takeover, no attempt spent."""
    clock = ManualClock()
    saga = build_saga(f"lostclaim_{unique}", Recorder())
    engine = SagaEngine(postgres_url, [saga], worker_id=f"w-{unique}", clock=clock)
    try:
        await engine.create_schema()
        run_id = await engine.start(saga.name, {})
        lost_at = clock.now()
        (lost,) = await engine.store.claim(ClaimRequest(engine.worker_id, 1, [saga.name], lost_at))
        clock.advance(timedelta(milliseconds=10))
        (again,) = await engine.store.claim(
            ClaimRequest(engine.worker_id, 5, [saga.name], clock.now(), lost_claims=[lost_at])
        )
        assert (again.run.id, again.previous_owner) == (run_id, None)
        assert (again.run.attempt, again.run.epoch) == (1, lost.run.epoch + 1)
        assert [e.kind for e in await engine.history(run_id)] == [EventKind.SAGA_STARTED]
        assert (
            await engine.store.claim(
                ClaimRequest(engine.worker_id, 5, [saga.name], clock.now(), lost_claims=[lost_at])
            )
            == []
        ), "claimed since: the run is no longer the lost claim's"
    finally:
        await engine.close()
