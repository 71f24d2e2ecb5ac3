"""Versions with real engines on SQLite and PostgreSQL: pinned runs, orphans, migrate."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from cloudphone.saga import (
    EventKind,
    NonRetryableError,
    OperatorActionError,
    SagaEngine,
    SagaStatus,
)
from cloudphone.saga.testing import FaultInjector
from tests.support.sagas import build_versioned
from tests.support.waiting import eventually

V1_STEPS = ("A", "B", "C")
V2_STEPS = ("A", "B2", "C", "D")


def step_names(events: list) -> list[str]:
    return [e.step for e in events if e.kind is EventKind.STEP_SUCCEEDED]


def unknown_gauge(engine: SagaEngine, saga_type: str, version: int) -> float | None:
    return engine.metrics.registry.get_sample_value(
        "saga_runs_unknown_version", {"saga_type": saga_type, "saga_version": str(version)}
    )


async def test_runs_finish_on_the_version_they_started_on(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """Runs started on v1 drain on v1 beside v2; new starts take v2; each runs its own steps."""
    name, calls = f"ver_{unique}", []
    v1 = build_versioned(name, 1, V1_STEPS, calls=calls)
    v2 = build_versioned(name, 2, V2_STEPS, calls=calls)
    old = make_engine([v1])
    await old.create_schema()
    before = [await old.start(name, {"n": i}) for i in range(3)]
    both = make_engine([v2, v1])
    assert both.sagas[name] is v2, "by name: the newest version"
    async with both.worker():
        after = [await both.start(name, {"n": i}) for i in range(2)]
        runs = [await both.wait(i, timeout=timedelta(seconds=15)) for i in before + after]
    assert [(r.status, r.saga_version) for r in runs] == [(SagaStatus.COMPLETED, 1)] * 3 + [
        (SagaStatus.COMPLETED, 2)
    ] * 2
    for run in runs[:3]:
        assert step_names(await both.history(run.id)) == list(V1_STEPS)
        assert {run.data[s] for s in V1_STEPS} == {"v1"}
    for run in runs[3:]:
        assert step_names(await both.history(run.id)) == list(V2_STEPS)
    assert sorted(calls) == sorted(
        [f"v1:{s}" for s in V1_STEPS] * 3 + [f"v2:{s}" for s in V2_STEPS] * 2
    )


async def test_runs_of_a_version_no_live_worker_has_are_orphaned_until_one_starts(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    name = f"orph_{unique}"
    v1, v2 = build_versioned(name, 1, V1_STEPS), build_versioned(name, 2, V2_STEPS)
    starter = make_engine([v1])
    await starter.create_schema()
    stuck = await starter.start(name, {})
    assert [r.id for r in await starter.list(saga_type=name, orphaned=True)] == [stuck]
    newer = make_engine([v2])
    async with newer.worker():
        fresh = await newer.start(name, {})
        assert (
            await newer.wait(fresh, timeout=timedelta(seconds=10))
        ).status is SagaStatus.COMPLETED
        assert [r.id for r in await newer.list(saga_type=name, orphaned=True)] == [stuck]
        assert (await newer.get(stuck)).status is SagaStatus.PENDING, "never claimed"
        assert unknown_gauge(newer, name, 1) == 1.0, "counted when the worker started"
        async with starter.worker():
            assert (
                await starter.wait(stuck, timeout=timedelta(seconds=10))
            ).status is SagaStatus.COMPLETED
        assert await newer.list(saga_type=name, orphaned=True) == []

        async def gauge() -> float | None:
            return unknown_gauge(newer, name, 1)

        await eventually(gauge, lambda n: n == 0.0, what="the gauge refreshed (once per lease)")
    live = {w.worker_id for w in await newer.store.live_workers()}
    assert live.isdisjoint({newer.worker_id, starter.worker_id}), "stopped: gone from the list"


async def test_migrate_moves_an_orphaned_run_to_the_version_the_workers_have(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    name = f"migr_{unique}"
    v1, v2 = build_versioned(name, 1, V1_STEPS), build_versioned(name, 2, V2_STEPS)
    starter = make_engine([v1])
    await starter.create_schema()
    stuck = await starter.start(name, {})
    engine = make_engine([v1, v2])
    async with make_engine([v2]).worker():
        with pytest.raises(OperatorActionError, match=r"version 3 of .* is not registered here"):
            await engine.migrate(stuck, 3)
        moved = await engine.migrate(stuck, 2, note="v1 is retired", actor="ops")
        assert moved.saga_version == 2
        run = await engine.wait(stuck, timeout=timedelta(seconds=10))
    assert (run.status, run.saga_version) == (SagaStatus.COMPLETED, 2)
    events = await engine.history(stuck)
    assert step_names(events) == list(V2_STEPS)
    (migrated,) = [e for e in events if e.kind is EventKind.OPERATOR_MIGRATED]
    assert (migrated.step, migrated.detail) == (
        "A",
        {"actor": "ops", "note": "v1 is retired", "from_version": 1, "to_version": 2},
    )


async def test_a_failed_run_migrated_then_retried_goes_on_with_the_new_steps(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    """v1's C fails for good after the pivot; v2 fixes C and adds D; retry finishes on v2."""
    name, calls = f"migf_{unique}", []
    v1 = build_versioned(name, 1, ("A", "P", "C"), pivot="P", calls=calls)
    v2 = build_versioned(name, 2, ("A", "P", "C", "D"), pivot="P", calls=calls)
    v3 = build_versioned(name, 3, ("A", "P", "E"), pivot="P")
    faults = FaultInjector()
    faults.fail("C", times=1, error=NonRetryableError("bug in v1"))
    engine = make_engine([v1, v2, v3], hooks=faults)
    await engine.create_schema()
    old = make_engine([v1])
    run_id = await old.start(name, {})
    async with engine.worker():
        assert (
            await engine.wait(run_id, timeout=timedelta(seconds=10))
        ).status is SagaStatus.FAILED
        with pytest.raises(OperatorActionError, match="has no step 'C'"):
            await engine.migrate(run_id, 3)
        failed = await engine.migrate(run_id, 2, actor="ops")
        assert (failed.status, failed.saga_version) == (SagaStatus.FAILED, 2)
        await engine.retry(run_id, actor="ops")
        run = await engine.wait(run_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPLETED
    # C's first attempt (on v1) failed before its action ran; the retry ran v2's C.
    assert (calls, faults.attempts("C")) == (["v1:A", "v1:P", "v2:C", "v2:D"], 2)


async def test_starts_pin_the_newest_version_registered(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    name = f"pin_{unique}"
    engine = make_engine([build_versioned(name, 3, ("A",)), build_versioned(name, 1, ("A",))])
    await engine.create_schema()
    run = await engine.get(await engine.start(name, {}))
    assert run.saga_version == 3

    async def pending() -> SagaStatus:
        return (await engine.get(run.id)).status

    async with engine.worker():
        await eventually(pending, lambda s: s is SagaStatus.COMPLETED, what="completed")


async def test_cancelling_a_run_of_a_version_not_registered_here_is_refused_clearly(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    name = f"canc_{unique}"
    starter = make_engine([build_versioned(name, 1, V1_STEPS)])
    await starter.create_schema()
    run_id = await starter.start(name, {})
    newer = make_engine([build_versioned(name, 2, V2_STEPS)])
    with pytest.raises(OperatorActionError, match=r"version 1 .* not registered here.*migrate"):
        await newer.cancel(run_id, actor="ops")
    assert (await newer.get(run_id)).status is SagaStatus.PENDING
