"""The store contract, part 3: versions, worker presence, orphaned runs and forks.

Runs on the memory store, on SQLite and on PostgreSQL (parts 1 and 2: the rest). PostgreSQL
is shared by every test, so counts are read for this test's own saga type only.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloudphone.saga import EventKind, OperatorActionError, SagaRun, SagaStatus, operators
from cloudphone.saga.history import StepsDone
from cloudphone.saga.progress import OperatorChange
from cloudphone.saga.store.base import ClaimRequest, RunFilter, WorkerPresence
from tests.integration.saga.test_store_contract_reads import _failed
from tests.support.sagas import Recorder, build_saga
from tests.support.stores import LEASE, Backend


def presence(backend: Backend, worker_id: str, *versions: int) -> WorkerPresence:
    """``worker_id`` live now, driving these versions of the test's saga type."""
    now = backend.clock.now()
    keys = tuple((backend.saga_type, v) for v in versions)
    return WorkerPresence(worker_id, keys, now, now, "host-1", 4242)


async def orphans(backend: Backend) -> dict[int, int]:
    """Orphaned runs of this test's saga type, per version."""
    counts = await backend.store.count_orphaned()
    return {v: n for (t, v), n in counts.items() if t == backend.saga_type}


async def orphan_ids(backend: Backend) -> list[str]:
    runs = await backend.store.list_runs(RunFilter(saga_type=backend.saga_type, orphaned=True))
    return [r.id for r in runs]


async def test_a_run_stores_its_version_and_origin(backend: Backend) -> None:
    plain = await backend.insert()
    assert (plain.saga_version, plain.forked_from) == (1, None)
    fork = await backend.insert(saga_version=3, forked_from=plain.id, detail={"from_step": "B"})
    assert (fork.saga_version, fork.forked_from) == (3, plain.id)
    (started,) = await backend.store.history(fork.id)
    assert started.detail == {"from_step": "B"}
    assert [r.id for r in await backend.store.list_runs(RunFilter(forked_from=plain.id))] == [
        fork.id
    ]
    assert await backend.store.list_runs(RunFilter(forked_from=fork.id)) == []


async def test_a_claim_takes_only_the_versions_asked_for(backend: Backend) -> None:
    clock, kind = backend.clock, backend.saga_type
    old = await backend.insert(saga_version=1)
    new = await backend.insert(saga_version=2, now=clock.now() + timedelta(milliseconds=1))
    clock.advance(timedelta(milliseconds=1))
    assert await backend.store.next_due([(kind, 3)]) is None
    assert await backend.store.next_due([(kind, 2)]) == new.next_run_at
    assert await backend.store.claim(ClaimRequest("w3", 5, [(kind, 3)], clock.now())) == []
    (claimed,) = await backend.store.claim(
        ClaimRequest("w1", 5, [(kind, 1), (f"{kind}_x", 2)], clock.now())
    )
    assert (claimed.run.id, claimed.run.saga_version) == (old.id, 1)
    (second,) = await backend.store.claim(ClaimRequest("w2", 5, [kind], clock.now()))
    assert second.run.id == new.id, "a bare name stands for every version"


async def test_reclaiming_ones_own_runs_keeps_to_its_versions(backend: Backend) -> None:
    kind = backend.saga_type
    await backend.insert(saga_version=1, owner="w1")
    mine = await backend.insert(saga_version=2, owner="w1")
    now = backend.clock.now()
    (back,) = await backend.store.claim(ClaimRequest("w1", 5, [(kind, 2)], now, reclaim_own=True))
    assert back.run.id == mine.id


async def test_workers_are_live_until_they_withdraw_or_stop_refreshing(backend: Backend) -> None:
    store, clock = backend.store, backend.clock
    await store.announce_presence(presence(backend, "w1", 1))
    await store.announce_presence(presence(backend, "w2", 1, 2))
    mine = [w for w in await store.live_workers() if w.worker_id in ("w1", "w2")]
    assert [(w.worker_id, w.sagas, w.host, w.pid) for w in mine] == [
        ("w1", ((backend.saga_type, 1),), "host-1", 4242),
        ("w2", ((backend.saga_type, 1), (backend.saga_type, 2)), "host-1", 4242),
    ]
    assert mine[0].started_at == mine[0].heartbeat_at == clock.now()
    await store.withdraw_presence("w2")
    clock.advance(2 * LEASE)
    await store.announce_presence(presence(backend, "w3", 2))
    live = {w.worker_id: w for w in await store.live_workers()}
    assert "w2" not in live, "withdrawn"
    assert "w1" in live, "refreshed exactly two leases ago: still live"
    clock.advance(timedelta(milliseconds=1))
    live = {w.worker_id: w for w in await store.live_workers()}
    assert ("w1" in live, "w3" in live) == (False, True)
    await store.announce_presence(presence(backend, "w3", 3))
    (w3,) = [w for w in await store.live_workers() if w.worker_id == "w3"]
    assert (w3.sagas, w3.heartbeat_at) == (((backend.saga_type, 3),), clock.now())


async def test_runs_no_live_worker_drives_are_orphaned(backend: Backend) -> None:
    store, clock = backend.store, backend.clock
    v1 = await backend.insert(saga_version=1)
    v2 = await backend.insert(saga_version=2, owner="gone")
    finished = await backend.insert(saga_version=3)
    await _failed(backend, finished)
    assert await orphans(backend) == {1: 1, 2: 1}, "nobody drives anything: every active run"
    assert sorted(await orphan_ids(backend)) == sorted([v1.id, v2.id])

    await store.announce_presence(presence(backend, "a", 1))
    assert await orphans(backend) == {2: 1}
    assert await orphan_ids(backend) == [v2.id]
    await store.announce_presence(presence(backend, "b", 2, 3))
    assert await orphans(backend) == {}
    assert await orphan_ids(backend) == []

    clock.advance(2 * LEASE + timedelta(seconds=1))
    await store.announce_presence(presence(backend, "a", 1))
    assert await orphans(backend) == {2: 1}, "b stopped refreshing"
    await store.withdraw_presence("a")
    assert await orphans(backend) == {1: 1, 2: 1}


async def test_a_spawned_run_is_inserted_with_the_operators_change(backend: Backend) -> None:
    store, clock = backend.store, backend.clock
    original = await _failed(backend, await backend.insert())
    fork = backend.new_run(forked_from=original.id, first_step="B", detail={"from_step": "B"})

    def refuse(run: SagaRun) -> OperatorChange:
        raise OperatorActionError("no")

    with pytest.raises(OperatorActionError):
        await store.operate(original.id, refuse, spawn=fork)
    assert await store.get(fork.id) is None, "a refused decision inserts nothing"

    def forked(run: SagaRun) -> OperatorChange:
        return operators.forked(run, fork.id, "B", clock.now(), "ops", None, [])

    after = await store.operate(original.id, forked, spawn=fork)
    assert after.last_seq == original.last_seq + 1
    *_, event = await store.history(original.id)
    assert (event.kind, event.detail["fork"]) == (EventKind.RUN_FORKED, fork.id)
    spawned = await backend.read(fork.id)
    assert (spawned.status, spawned.current_step, spawned.forked_from) == (
        SagaStatus.PENDING,
        "B",
        original.id,
    )
    (claimed,) = await store.claim(ClaimRequest("w1", 5, [backend.saga_type], clock.now()))
    assert claimed.run.id == fork.id


async def test_a_migrated_run_is_claimed_for_its_new_version(backend: Backend) -> None:
    store, clock, kind = backend.store, backend.clock, backend.saga_type
    run = await backend.insert(owner="w1")
    source, target = (build_saga(kind, Recorder(), pivot="B", version=v) for v in (1, 2))
    nothing_done = StepsDone((), frozenset(), None)

    def migrate(r: SagaRun) -> OperatorChange:
        return operators.migrate(r, nothing_done, source, target, clock.now(), "ops", None)

    moved = await store.operate(run.id, migrate)
    assert (moved.saga_version, moved.owner, moved.epoch) == (2, None, run.epoch + 1)
    assert await store.claim(ClaimRequest("w1", 5, [(kind, 1)], clock.now())) == []
    (claimed,) = await store.claim(ClaimRequest("w2", 5, [(kind, 2)], clock.now()))
    assert claimed.run.id == run.id
