"""The store contract, part 2: reads, list filters, operator actions and announcements.

Runs on the memory store, on SQLite and on PostgreSQL (part 1: writes, claims and leases).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from cloudphone.saga import (
    EventKind,
    OperatorActionError,
    SagaNotFoundError,
    SagaRun,
    SagaStatus,
    operators,
)
from cloudphone.saga.decide import on_unknown_step
from cloudphone.saga.errors import LeaseLostError
from cloudphone.saga.progress import OperatorChange, state_of
from cloudphone.saga.store.base import ClaimRequest, RunFilter
from cloudphone.saga.store.listen import Listener
from tests.integration.saga.test_store_contract import SHAPE, succeeded
from tests.support.stores import LEASE, Backend
from tests.support.waiting import eventually


async def test_reads_of_unknown_runs(backend: Backend) -> None:
    assert await backend.store.get("no-such-run") is None
    assert await backend.store.history("no-such-run") == []
    assert await backend.store.find(backend.saga_type, "no-such-key") is None
    with pytest.raises(SagaNotFoundError):
        await backend.store.operate(
            "no-such-run", lambda run: operators.resolve(run, backend.clock.now(), None, "x")
        )


async def test_reads_are_copies_the_caller_cannot_change(backend: Backend) -> None:
    """Changing what a read returned, or the data a run was started with, changes nothing."""
    data = {"items": [1, 2]}
    new = backend.new_run(data=data)
    await backend.store.insert_run(new)
    data["items"].append(3)
    run = await backend.read(new.id)
    run.data["items"].append(4)
    assert (await backend.read(new.id)).data == {"items": [1, 2]}


async def test_history_numbers_events_without_gaps(backend: Backend) -> None:
    clock, types = backend.clock, [backend.saga_type]
    run = await backend.insert()
    (claimed,) = await backend.store.claim(ClaimRequest("w1", 1, types, clock.now()))
    await backend.store.commit(run.id, claimed.run.epoch, succeeded(backend, claimed.run))
    clock.advance(LEASE + timedelta(seconds=1))
    await backend.store.claim(ClaimRequest("w2", 1, types, clock.now()))
    events = await backend.store.history(run.id)
    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.kind for e in events] == [
        EventKind.SAGA_STARTED,
        EventKind.STEP_SUCCEEDED,
        EventKind.LEASE_TAKEOVER,
    ]
    assert (events[1].step, events[1].attempt, events[2].step) == ("A", 1, "B")


async def test_list_filters_and_orders_newest_first(backend: Backend) -> None:
    clock, store, kind = backend.clock, backend.store, backend.saga_type
    start = clock.now()
    old = await backend.insert(started_by="alice", now=start)
    twins = sorted(
        [
            await backend.insert(started_by="bob", now=start + timedelta(seconds=1))
            for _ in range(2)
        ],
        key=lambda r: r.id,
    )
    newest = await backend.insert(started_by="alice", now=start + timedelta(seconds=2))
    other = await backend.insert(saga_type=f"{kind}_other", now=start + timedelta(seconds=3))
    failed = await _failed(backend, newest)

    everything = await store.list_runs(RunFilter(saga_type=kind))
    assert [r.id for r in everything] == [newest.id, twins[1].id, twins[0].id, old.id]
    assert [r.id for r in await store.list_runs(RunFilter(saga_type=kind), limit=2, offset=1)] == [
        twins[1].id,
        twins[0].id,
    ]
    assert [r.id for r in await store.list_runs(RunFilter(saga_type=kind, started_by="alice"))] == [
        newest.id,
        old.id,
    ]
    assert [
        r.id for r in await store.list_runs(RunFilter(saga_type=kind, status=SagaStatus.PENDING))
    ] == [
        twins[1].id,
        twins[0].id,
        old.id,
    ]
    window = await store.list_runs(
        RunFilter(
            saga_type=kind,
            created_after=start + timedelta(seconds=1),
            created_before=start + timedelta(seconds=2),
        )
    )
    assert [r.id for r in window] == [twins[1].id, twins[0].id], "after is inclusive, before is not"
    assert [
        r.id for r in await store.list_runs(RunFilter(saga_type=kind, needs_attention=True))
    ] == [failed.id]
    await store.operate(
        failed.id, lambda run: operators.resolve(run, clock.now(), "ops", "fixed by hand")
    )
    assert await store.list_runs(RunFilter(saga_type=kind, needs_attention=True)) == []
    assert [r.id for r in await store.list_runs(RunFilter(saga_type=f"{kind}_other"))] == [other.id]


async def test_cancel_of_an_unowned_run_fences_and_compensates_atomically(backend: Backend) -> None:
    clock, store = backend.clock, backend.store
    run = await backend.insert()
    cancelled = await store.operate(
        run.id, lambda r: operators.cancel(r, SHAPE, clock.now(), "ops")
    )
    assert (cancelled.status, cancelled.epoch, cancelled.compensation_cause) == (
        SagaStatus.COMPENSATING,
        run.epoch + 1,
        "cancelled",
    )
    assert (cancelled.owner, cancelled.next_run_at) == (None, clock.now())
    assert await backend.read(run.id) == cancelled
    kinds = [e.kind for e in await store.history(run.id)]
    assert kinds == [
        EventKind.SAGA_STARTED,
        EventKind.CANCEL_REQUESTED,
        EventKind.COMPENSATION_STARTED,
    ]
    with pytest.raises(LeaseLostError):
        await store.commit(run.id, run.epoch, succeeded(backend, run))


async def test_cancel_of_a_held_run_is_a_request_its_owner_hears(backend: Backend) -> None:
    clock, store = backend.clock, backend.store
    run = await backend.insert(owner="w1")
    requested = await store.operate(run.id, lambda r: operators.cancel(r, SHAPE, clock.now(), None))
    assert (requested.cancel_requested, requested.epoch, requested.owner) == (True, run.epoch, "w1")
    assert await store.heartbeat("w1", [run.id]) == {run.id: (run.epoch, True)}
    committed = await store.commit(run.id, run.epoch, succeeded(backend, run))
    assert committed.cancel_requested is True


async def test_operator_actions_on_one_run_are_serialised(backend: Backend) -> None:
    """Two cancels at once: one wins, the other sees its result and is refused."""
    run = await backend.insert()

    def cancel(r: SagaRun) -> OperatorChange:
        return operators.cancel(r, SHAPE, backend.clock.now(), None)

    results = await asyncio.gather(
        backend.store.operate(run.id, cancel),
        backend.store.operate(run.id, cancel),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["OperatorActionError", "SagaRun"]
    kinds = [e.kind for e in await backend.store.history(run.id)]
    assert kinds.count(EventKind.CANCEL_REQUESTED) == 1


async def test_a_refused_operator_action_writes_nothing(backend: Backend) -> None:
    run = await backend.insert()
    with pytest.raises(OperatorActionError):
        await backend.store.operate(
            run.id, lambda r: operators.resolve(r, backend.clock.now(), None, "note")
        )
    assert await backend.read(run.id) == run
    assert len(await backend.store.history(run.id)) == 1


async def test_retry_of_a_failed_run_resumes_it(backend: Backend) -> None:
    clock, store = backend.clock, backend.store
    failed = await _failed(backend, await backend.insert())
    clock.advance(timedelta(seconds=5))
    retried = await store.operate(
        failed.id, lambda r: operators.retry(r, clock.now(), "ops", "again")
    )
    assert (retried.status, retried.attempt, retried.epoch) == (
        SagaStatus.RUNNING,
        1,
        failed.epoch + 1,
    )
    assert (retried.next_run_at, retried.finished_at) == (clock.now(), None)
    (claimed,) = await store.claim(ClaimRequest("w1", 1, [backend.saga_type], clock.now()))
    assert claimed.run.id == failed.id


async def test_announcements_reach_subscribers(backend: Backend) -> None:
    """Stores that announce call subscribers on notified inserts and fencing operator acts."""
    heard: list[str] = []
    subscription = backend.store.subscribe(heard.append)
    assert (subscription is not None) == backend.store.announces == (backend.name != "sqlite")
    if subscription is None:
        return
    subscription.start()
    try:
        if isinstance(subscription, Listener):
            await asyncio.wait_for(subscription.connected.wait(), 10)
        await backend.store.insert_run(backend.new_run(), notify=True)
        await eventually(lambda: _heard(heard), lambda n: n >= 1, what="announced insert")
        quiet = await backend.insert()  # notify=False: not announced
        await backend.store.operate(
            quiet.id, lambda r: operators.cancel(r, SHAPE, backend.clock.now(), None), notify=True
        )
        await eventually(lambda: _heard(heard), lambda n: n >= 2, what="announced operator act")
    finally:
        await subscription.stop()
    assert set(heard) == {backend.saga_type}
    assert len(heard) == 2


async def _heard(heard: list[str]) -> int:
    return len(heard)


async def _failed(backend: Backend, run: SagaRun) -> SagaRun:
    """Drive ``run`` to FAILED through the store (its step is unknown: it needs an operator)."""
    progress = on_unknown_step(state_of(run, SHAPE), "A", backend.clock.now())
    await backend.store.commit(run.id, run.epoch, progress)
    failed = await backend.read(run.id)
    assert failed.status is SagaStatus.FAILED
    return failed
