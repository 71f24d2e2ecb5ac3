"""The store contract, part 1: inserts, claims, leases, fencing and step transactions.

Every test runs on the memory store, on SQLite and on PostgreSQL: the engine may rely on
exactly what passes here, whichever store it runs on (part 2: reads and operator actions).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from cloudphone.saga import EventKind, SagaRun, SagaStatus
from cloudphone.saga.decide import on_step_failure, on_step_success
from cloudphone.saga.errors import LeaseLostError
from cloudphone.saga.progress import Progress, state_of
from cloudphone.saga.store.base import ClaimRequest
from tests.support.sagas import Recorder, build_saga
from tests.support.stores import LEASE, Backend, contract_effects

SHAPE = build_saga("contract", Recorder(), steps=("A", "B", "C"), pivot="B")
"""The steps the progress in these tests moves through (A compensatable, B pivot, C after)."""


def succeeded(backend: Backend, run: SagaRun, output: dict[str, Any] | None = None) -> Progress:
    """The progress of the current step's attempt succeeding (keeps the lease)."""
    now = backend.clock.now()
    return on_step_success(state_of(run, SHAPE), SHAPE, output, now, now)


def failed(backend: Backend, run: SagaRun) -> Progress:
    """The progress of the current step's attempt failing: a retry soon, lease released."""
    now = backend.clock.now()
    return on_step_failure(state_of(run, SHAPE), SHAPE, RuntimeError("down"), now, now, lambda: 1.0)


async def test_insert_writes_a_pending_run_and_its_start_event(backend: Backend) -> None:
    run = await backend.insert(data={"n": 1, "nested": {"xs": [1, 2]}}, started_by="alice")
    now = backend.clock.now()
    assert (run.status, run.current_step, run.attempt, run.epoch) == (
        SagaStatus.PENDING,
        "A",
        1,
        1,
    )
    assert (run.owner, run.lease_expires_at, run.next_run_at) == (None, None, now)
    assert (run.created_at, run.updated_at, run.finished_at) == (now, now, None)
    assert run.data == {"n": 1, "nested": {"xs": [1, 2]}}
    assert (run.started_by, run.cancel_requested, run.resolution) == ("alice", False, None)
    (started,) = await backend.store.history(run.id)
    assert (started.seq, started.kind, started.detail, started.at) == (
        1,
        EventKind.SAGA_STARTED,
        {},
        now,
    )


async def test_insert_with_an_idempotency_key_returns_the_first_run(backend: Backend) -> None:
    first = backend.new_run(idempotency_key="k1")
    assert await backend.store.insert_run(first) == (first.id, True)
    again = backend.new_run(idempotency_key="k1", data={"n": 2})
    assert await backend.store.insert_run(again) == (first.id, False)
    other_type = backend.new_run(idempotency_key="k1", saga_type=f"{backend.saga_type}_b")
    assert await backend.store.insert_run(other_type) == (other_type.id, True)

    assert await backend.store.get(again.id) is None
    assert (await backend.read(first.id)).data == {"n": 1}
    found = await backend.store.find(backend.saga_type, "k1")
    assert found is not None
    assert found.id == first.id
    assert await backend.store.find(backend.saga_type, "k2") is None
    events = await backend.store.history(first.id)
    assert [(e.kind, e.detail) for e in events] == [
        (EventKind.SAGA_STARTED, {"idempotency_key": "k1"})
    ]


async def test_insert_claimed_by_its_worker(backend: Backend) -> None:
    run = await backend.insert(owner="w1")
    assert (run.status, run.owner, run.epoch, run.attempt) == (SagaStatus.RUNNING, "w1", 1, 1)
    assert run.lease_expires_at == backend.clock.now() + LEASE
    assert (
        await backend.store.claim(ClaimRequest("w2", 10, [backend.saga_type], backend.clock.now()))
        == []
    )


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_insert_in_the_callers_transaction(backend: Backend, outcome: str) -> None:
    """The run exists only once the caller's transaction commits; a rollback leaves nothing."""
    new = backend.new_run(idempotency_key="in-txn")
    with pytest.raises(RuntimeError) if outcome == "rollback" else contextlib.nullcontext():
        async with backend.business.begin() as conn:
            await conn.execute(sa.insert(contract_effects).values(saga_id=new.id))
            assert await backend.store.insert_run(new, conn) == (new.id, True)
            # Reads only: on SQLite a claim would wait for this transaction's writer lock.
            assert await backend.store.get(new.id) is None, "visible before the commit"
            assert await backend.store.find(backend.saga_type, "in-txn") is None
            assert await backend.store.next_due([backend.saga_type]) is None
            if outcome == "rollback":
                raise RuntimeError("the caller failed")
    run = await backend.store.get(new.id)
    found = await backend.store.find(backend.saga_type, "in-txn")
    if outcome == "rollback":
        assert (run, found, await backend.effects(new.id)) == (None, None, 0)
        assert await backend.store.history(new.id) == []
        return
    assert run is not None
    assert found is not None
    assert (run.status, found.id, await backend.effects(new.id)) == (SagaStatus.PENDING, new.id, 1)
    (claimed,) = await backend.store.claim(ClaimRequest("w1", 10, [backend.saga_type], new.now))
    assert claimed.run.id == new.id


async def test_insert_in_a_connection_that_has_not_begun_joins_its_first_transaction(
    backend: Backend,
) -> None:
    new = backend.new_run()
    async with backend.business.engine.connect() as conn:
        assert not conn.in_transaction()
        assert await backend.store.insert_run(new, conn) == (new.id, True)
        assert await backend.store.get(new.id) is None
        await conn.commit()
    assert (await backend.read(new.id)).status is SagaStatus.PENDING


async def test_claim_leases_due_runs_of_the_given_types_oldest_first(backend: Backend) -> None:
    clock, types = backend.clock, [backend.saga_type]
    later = await backend.insert(now=clock.now() + timedelta(seconds=1))
    first = await backend.insert()
    await backend.insert(saga_type=f"{backend.saga_type}_other")
    second = await backend.insert(now=clock.now() + timedelta(milliseconds=500))

    assert await backend.store.claim(ClaimRequest("w1", 0, types, clock.now())) == []
    assert await backend.store.claim(ClaimRequest("w1", 5, [], clock.now())) == []
    clock.advance(timedelta(milliseconds=500))
    claimed = await backend.store.claim(ClaimRequest("w1", 5, types, clock.now()))
    assert [c.run.id for c in claimed] == [first.id, second.id], "not due yet, or other type"
    for item in claimed:
        assert item.previous_owner is None
        assert (item.run.status, item.run.owner, item.run.epoch) == (SagaStatus.RUNNING, "w1", 2)
        assert item.run.lease_expires_at == clock.now() + LEASE
        assert item.run.attempt == 1
    clock.advance(timedelta(milliseconds=500))
    (only,) = await backend.store.claim(ClaimRequest("w2", 1, types, clock.now()))
    assert only.run.id == later.id
    assert await backend.store.claim(ClaimRequest("w2", 5, types, clock.now())) == [], (
        "leases still held"
    )


async def test_claim_limit_takes_the_oldest_and_exclude_skips(backend: Backend) -> None:
    clock, types = backend.clock, [backend.saga_type]
    ids = [(await backend.insert(now=clock.now() + timedelta(seconds=i))).id for i in range(3)]
    clock.advance(timedelta(seconds=3))
    claimed = await backend.store.claim(ClaimRequest("w1", 2, types, clock.now(), exclude=[ids[0]]))
    assert [c.run.id for c in claimed] == ids[1:]


async def test_expired_lease_is_taken_over_counting_the_lost_attempt(backend: Backend) -> None:
    clock, types = backend.clock, [backend.saga_type]
    run = await backend.insert()
    (a,) = await backend.store.claim(ClaimRequest("a", 1, types, clock.now()))
    clock.advance(LEASE)
    assert await backend.store.claim(ClaimRequest("b", 1, types, clock.now())) == [], (
        "expires strictly after"
    )
    clock.advance(timedelta(milliseconds=1))
    (b,) = await backend.store.claim(ClaimRequest("b", 1, types, clock.now()))

    assert b.previous_owner == "a"
    assert (b.run.owner, b.run.epoch, b.run.attempt) == ("b", a.run.epoch + 1, 2)
    assert b.run.lease_expires_at == clock.now() + LEASE
    *_, takeover = await backend.store.history(run.id)
    assert (takeover.seq, takeover.kind, takeover.step, takeover.attempt) == (
        2,
        EventKind.LEASE_TAKEOVER,
        "A",
        2,
    )
    assert takeover.detail == {"previous_owner": "a", "worker": "b"}
    assert takeover.at == clock.now()


async def test_reclaim_own_takes_back_this_workers_runs_at_once(backend: Backend) -> None:
    clock, types = backend.clock, [backend.saga_type]
    mine = await backend.insert(owner="w1")
    theirs = await backend.insert(owner="w2")
    assert await backend.store.claim(ClaimRequest("w1", 5, types, clock.now())) == []
    (back,) = await backend.store.claim(ClaimRequest("w1", 5, types, clock.now(), reclaim_own=True))
    assert (back.run.id, back.previous_owner, back.run.attempt) == (mine.id, "w1", 2)
    assert back.run.epoch == mine.epoch + 1
    assert (await backend.read(theirs.id)).owner == "w2"


async def test_stale_epoch_cannot_write_and_current_epoch_can(backend: Backend) -> None:
    clock, types = backend.clock, [backend.saga_type]
    run = await backend.insert()
    (a,) = await backend.store.claim(ClaimRequest("a", 1, types, clock.now()))
    clock.advance(LEASE + timedelta(seconds=1))
    (b,) = await backend.store.claim(ClaimRequest("b", 1, types, clock.now()))
    before, history = await backend.read(run.id), await backend.store.history(run.id)

    with pytest.raises(LeaseLostError):
        await backend.store.commit(run.id, a.run.epoch, succeeded(backend, a.run, {"by": "a"}))
    with pytest.raises(LeaseLostError):
        await backend.store.commit("no-such-run", 1, succeeded(backend, a.run))
    assert await backend.read(run.id) == before
    assert await backend.store.history(run.id) == history

    clock.advance(timedelta(seconds=1))
    committed = await backend.store.commit(
        run.id, b.run.epoch, succeeded(backend, b.run, {"by": "b"})
    )
    assert committed.cancel_requested is False
    after = await backend.read(run.id)
    assert (after.current_step, after.attempt, after.data) == ("B", 1, {"n": 1, "by": "b"})
    assert (after.owner, after.epoch) == ("b", b.run.epoch)
    assert after.lease_expires_at == clock.now() + LEASE, "progress that keeps the lease renews it"
    assert [e.seq for e in await backend.store.history(run.id)] == [1, 2, 3]


async def test_progress_that_lets_go_releases_the_lease(backend: Backend) -> None:
    clock = backend.clock
    run = await backend.insert(owner="w1")
    await backend.store.commit(run.id, run.epoch, failed(backend, run))
    after = await backend.read(run.id)
    assert (after.owner, after.lease_expires_at, after.attempt) == (None, None, 2)
    assert after.next_run_at == clock.now() + SHAPE.retry.initial_interval
    assert after.error is not None
    assert (after.error.type, after.error.step) == ("RuntimeError", "A")
    assert await backend.store.next_due([backend.saga_type]) == after.next_run_at
    kinds = [e.kind for e in await backend.store.history(run.id)]
    assert kinds == [EventKind.SAGA_STARTED, EventKind.STEP_FAILED, EventKind.RETRY_SCHEDULED]


@pytest.mark.parametrize("fenced", [False, True])
async def test_step_transaction_commits_business_write_and_progress_together(
    backend: Backend, fenced: bool
) -> None:
    run = await backend.insert(owner="w1")
    epoch = run.epoch - 1 if fenced else run.epoch
    with pytest.raises(LeaseLostError) if fenced else contextlib.nullcontext():
        async with backend.store.step_transaction() as tx:
            await tx.session.execute(sa.insert(contract_effects).values(saga_id=run.id))
            await tx.commit(run.id, epoch, succeeded(backend, run, {"wrote": True}))
    after = await backend.read(run.id)
    if fenced:
        assert (await backend.effects(run.id), after) == (0, run), "half of it survived"
        return
    assert await backend.effects(run.id) == 1
    assert (after.current_step, after.data) == ("B", {"n": 1, "wrote": True})


async def test_heartbeat_renews_only_held_active_leases(backend: Backend) -> None:
    clock, store = backend.clock, backend.store
    held = await backend.insert(owner="w1")
    other = await backend.insert(owner="w2")
    done = await backend.insert(owner="w1")
    await store.commit(done.id, done.epoch, _finished(backend, done))
    assert await store.heartbeat("w1", []) == {}
    clock.advance(timedelta(seconds=3))
    answer = await store.heartbeat("w1", [held.id, other.id, done.id, "no-such-run"])
    assert answer == {held.id: (held.epoch, False)}
    assert (await backend.read(held.id)).lease_expires_at == clock.now() + LEASE
    assert (await backend.read(other.id)).lease_expires_at == other.lease_expires_at


async def test_release_hands_runs_back_and_fences_the_old_owner(backend: Backend) -> None:
    clock, store, types = backend.clock, backend.store, [backend.saga_type]
    mine = await backend.insert(owner="w1")
    theirs = await backend.insert(owner="w2")
    clock.advance(timedelta(seconds=2))
    assert await store.release("w1", [], clock.now()) == 0
    assert await store.release("w1", [mine.id, theirs.id], clock.now()) == 1
    released = await backend.read(mine.id)
    assert (released.owner, released.lease_expires_at, released.epoch) == (None, None, 2)
    assert (released.next_run_at, released.status) == (clock.now(), SagaStatus.RUNNING)
    assert (await backend.read(theirs.id)).owner == "w2"
    with pytest.raises(LeaseLostError):
        await store.commit(mine.id, mine.epoch, succeeded(backend, mine))
    (again,) = await store.claim(ClaimRequest("w3", 5, types, clock.now()))
    assert (again.run.id, again.previous_owner, again.run.attempt) == (mine.id, None, 1)


async def test_next_due_is_the_earliest_unowned_active_run(backend: Backend) -> None:
    clock, types = backend.clock, [backend.saga_type]
    assert await backend.store.next_due(types) is None
    await backend.insert(owner="w1", now=clock.now() - timedelta(seconds=5))
    soon = await backend.insert(now=clock.now() + timedelta(seconds=2))
    await backend.insert(now=clock.now() + timedelta(seconds=4))
    await backend.insert(saga_type=f"{backend.saga_type}_other", now=clock.now())
    assert await backend.store.next_due(types) == soon.next_run_at


def _finished(backend: Backend, run: SagaRun) -> Progress:
    """Progress that ends the run (COMPLETED)."""
    progress = succeeded(backend, run)
    return Progress(
        **{
            **progress.__dict__,
            "status": SagaStatus.COMPLETED,
            "keep_lease": False,
            "finished": True,
            "next_run_at": None,
        }
    )
