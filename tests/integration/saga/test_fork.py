"""Fork from a step with real engines on SQLite and PostgreSQL: data, keys, links, refusals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from cloudphone.saga import EventKind, OperatorActionError, SagaEngine, SagaStatus
from tests.support.sagas import build_versioned

STEPS = ("A", "P", "C", "D")


async def finished_run(engine: SagaEngine, name: str) -> str:
    async with engine.worker():
        run_id = await engine.start(name, {"order": 7})
        assert (
            await engine.wait(run_id, timeout=timedelta(seconds=10))
        ).status is SagaStatus.COMPLETED
    return run_id


async def test_a_fork_reruns_from_its_step_on_the_originals_data_with_new_keys(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    name, calls = f"fork_{unique}", []
    saga = build_versioned(name, 2, STEPS, pivot="P", calls=calls)
    engine = make_engine([saga])
    await engine.create_schema()
    original = await finished_run(engine, name)
    calls.clear()
    async with engine.worker():
        fork_id = await engine.fork(original, "C", note="the email bounced", actor="ops")
        fork = await engine.wait(fork_id, timeout=timedelta(seconds=10))
    before = await engine.get(original)
    assert calls == ["v2:C", "v2:D"], "only the steps from C ran again"
    assert (fork.status, fork.saga_version, fork.forked_from, fork.started_by) == (
        SagaStatus.COMPLETED,
        2,
        original,
        "ops",
    )
    # The original's data before C, then the re-run steps' outputs, keyed by the fork's id.
    assert {k: fork.data[k] for k in ("order", "A", "key:A", "P", "key:P")} == {
        k: before.data[k] for k in ("order", "A", "key:A", "P", "key:P")
    }
    assert (fork.data["key:C"], fork.data["key:D"]) == (f"{fork_id}:C", f"{fork_id}:D")
    assert before.data["key:C"] == f"{original}:C"

    started, *rest = await engine.history(fork_id)
    assert (started.kind, started.detail) == (
        EventKind.SAGA_STARTED,
        {"forked_from": original, "from_step": "C", "actor": "ops", "note": "the email bounced"},
    )
    assert [e.step for e in rest if e.kind is EventKind.STEP_SUCCEEDED] == ["C", "D"]
    *_, forked = await engine.history(original)
    assert (forked.kind, forked.step, forked.detail) == (
        EventKind.RUN_FORKED,
        "C",
        {"fork": fork_id, "from_step": "C", "actor": "ops", "note": "the email bounced"},
    )
    assert before.status is SagaStatus.COMPLETED, "the original is left as it was"
    assert [r.id for r in await engine.list(forked_from=original)] == [fork_id]
    assert (
        engine.metrics.registry.get_sample_value("saga_started_total", {"saga_type": name}) == 2.0
    )


async def test_forking_across_a_completed_pivot_needs_force_and_both_histories_say_so(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    name = f"forkp_{unique}"
    engine = make_engine([build_versioned(name, 1, STEPS, pivot="P")])
    await engine.create_schema()
    original = await finished_run(engine, name)
    with pytest.raises(OperatorActionError, match="not after the pivot P, which the original"):
        await engine.fork(original, "P")
    assert await engine.list(forked_from=original) == [], "a refusal starts nothing"
    async with engine.worker():
        fork_id = await engine.fork(original, "A", force=True, actor="ops", note="redo it all")
        assert (
            await engine.wait(fork_id, timeout=timedelta(seconds=10))
        ).status is SagaStatus.COMPLETED
    (started, *_) = await engine.history(fork_id)
    *_, forked = await engine.history(original)
    for detail in (started.detail, forked.detail):
        assert detail["forced"] is True
        assert detail["overrode"] == [
            "A is not after the pivot P, which the original completed: the fork would do it again"
        ]


async def test_a_run_that_is_not_finished_cannot_be_forked(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    name = f"forkr_{unique}"
    engine = make_engine([build_versioned(name, 1, STEPS, pivot="P")])
    await engine.create_schema()
    pending = await engine.start(name, {})
    with pytest.raises(OperatorActionError, match="it is PENDING; only a finished run"):
        await engine.fork(pending, "A", force=True)


async def test_a_fork_needs_the_originals_version(
    make_engine: Callable[..., SagaEngine], unique: str
) -> None:
    name = f"forkv_{unique}"
    v1 = make_engine([build_versioned(name, 1, STEPS, pivot="P")])
    await v1.create_schema()
    original = await finished_run(v1, name)
    v2 = make_engine([build_versioned(name, 2, STEPS, pivot="P")])
    with pytest.raises(OperatorActionError, match=r"version 1 of .* is not registered here"):
        await v2.fork(original, "C")
