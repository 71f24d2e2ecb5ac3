"""The store contract, part 3: outputs kept per step, retry budgets, the attention count.

Runs on the memory store, on SQLite and on PostgreSQL (parts 1 and 2: writes and reads).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from cloudphone.saga import SagaRun, SagaStatus, operators
from cloudphone.saga.decide import on_unknown_step
from cloudphone.saga.progress import state_of
from cloudphone.saga.store.base import ClaimRequest
from tests.integration.saga.test_store_contract import SHAPE, failed, succeeded
from tests.support.stores import Backend


async def step_done(backend: Backend, run: SagaRun, output: dict[str, Any] | None) -> SagaRun:
    await backend.store.commit(run.id, run.epoch, succeeded(backend, run, output), run.last_seq)
    return await backend.read(run.id)


async def test_each_progress_writes_only_its_steps_output_and_never_the_input(
    backend: Backend,
) -> None:
    run = await backend.insert(owner="w1", data={"n": 1})
    run = await step_done(backend, run, {"a": 1, "nested": {"xs": [1, "é"]}, "none": None})
    assert run.input == {"n": 1}
    assert run.outputs == {"A": {"a": 1, "nested": {"xs": [1, "é"]}, "none": None}}
    run = await step_done(backend, run, None)
    assert run.outputs["B"] is None, "a step that returned nothing is recorded as such"
    assert (run.input, run.current_step) == ({"n": 1}, "C")
    assert run.data == {"n": 1, "a": 1, "nested": {"xs": [1, "é"]}, "none": None}


async def test_a_step_recorded_again_replaces_its_own_output(backend: Backend) -> None:
    run = await step_done(backend, await backend.insert(owner="w1"), {"a": 1, "old": True})
    again = replace(succeeded(backend, run, {"b": 1}), output_step="A", output={"a": 2})
    await backend.store.commit(run.id, run.epoch, again, run.last_seq)
    assert (await backend.read(run.id)).outputs == {"A": {"a": 2}}


async def test_step_names_with_dots_and_dashes_are_kept_whole(backend: Backend) -> None:
    """A step name is a key of its own, never a path into the outputs."""
    run = await backend.insert(owner="w1")
    progress = replace(succeeded(backend, run), output_step="ship.v2-eu", output={"x": 1})
    await backend.store.commit(run.id, run.epoch, progress, run.last_seq)
    assert (await backend.read(run.id)).outputs == {"ship.v2-eu": {"x": 1}}


async def test_retry_since_is_written_by_a_failure_and_cleared_by_moving_on(
    backend: Backend,
) -> None:
    clock, types = backend.clock, [backend.saga_type]
    run = await backend.insert(owner="w1")
    first_failure = clock.now()
    await backend.store.commit(run.id, run.epoch, failed(backend, run), run.last_seq)
    stored = await backend.read(run.id)
    assert stored.retry_since == first_failure
    clock.advance(timedelta(seconds=5))
    (claimed,) = await backend.store.claim(ClaimRequest("w1", 1, types, clock.now()))
    await backend.store.commit(
        run.id, claimed.run.epoch, failed(backend, claimed.run), claimed.run.last_seq
    )
    assert (await backend.read(run.id)).retry_since == first_failure, "the budget restarted"
    clock.advance(timedelta(seconds=5))
    (claimed,) = await backend.store.claim(ClaimRequest("w1", 1, types, clock.now()))
    after = await step_done(backend, claimed.run, None)
    assert (after.current_step, after.retry_since) == ("B", None)


async def fail_for_an_operator(backend: Backend, saga_type: str) -> SagaRun:
    run = await backend.insert(owner="w1", saga_type=saga_type)
    progress = on_unknown_step(state_of(run, SHAPE), "A", backend.clock.now())
    await backend.store.commit(run.id, run.epoch, progress, run.last_seq)
    return await backend.read(run.id)


async def test_runs_needing_attention_are_counted_per_type(backend: Backend) -> None:
    kind, other = backend.saga_type, f"{backend.saga_type}_other"
    before = await backend.store.count_needs_attention()
    assert (before.get(kind), before.get(other)) == (None, None)
    failed_runs = [await fail_for_an_operator(backend, kind) for _ in range(2)]
    await fail_for_an_operator(backend, other)
    await backend.insert(saga_type=kind)  # pending: fine
    resolved = await fail_for_an_operator(backend, other)
    now = backend.clock.now()
    await backend.store.operate(resolved.id, lambda r: operators.resolve(r, now, None, "done"))
    counts = await backend.store.count_needs_attention()
    assert (counts[kind], counts[other]) == (2, 1)

    retried = failed_runs[0]
    await backend.store.operate(retried.id, lambda r: operators.retry(r, now, None, None))
    assert (await backend.store.count_needs_attention())[kind] == 1
    back = await backend.read(retried.id)
    assert (back.status, back.retry_since) == (SagaStatus.RUNNING, None)
