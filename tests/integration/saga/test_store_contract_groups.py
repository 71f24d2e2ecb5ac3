"""The store contract, part 5: concurrent progress writes of many runs.

PostgreSQL sends a lone write as one typed statement and writes that queue up behind it as one
JSON batch (group commit); each must land as if written alone, and a fenced one among them
must fail alone. Runs on the memory store, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio

import pytest

from cloudphone.saga import EventKind, SagaStatus
from cloudphone.saga.errors import LeaseLostError, StaleStateError
from tests.integration.saga.test_store_contract import failed, succeeded
from tests.support.stores import Backend


async def test_concurrent_writes_each_land_and_a_fenced_one_fails_alone(backend: Backend) -> None:
    runs = [await backend.insert(owner="w1", data={"n": i}) for i in range(12)]
    writes = []
    for i, run in enumerate(runs):
        if i == 5:
            progress, epoch = succeeded(backend, run, {"x": i}), run.epoch + 1  # fenced off
        elif i % 3 == 2:
            progress, epoch = failed(backend, run), run.epoch
        else:
            progress, epoch = succeeded(backend, run, {"x": i, "deep": [i, {"k": "é"}]}), run.epoch
        writes.append(backend.store.commit(run.id, epoch, progress, run.last_seq))
    answers = await asyncio.gather(*writes, return_exceptions=True)

    for i, (run, answer) in enumerate(zip(runs, answers, strict=True)):
        after = await backend.read(run.id)
        kinds = [e.kind for e in await backend.store.history(run.id)]
        if i == 5:
            assert isinstance(answer, LeaseLostError)
            assert after == run, "a fenced write changed its run"
            continue
        assert not isinstance(answer, BaseException), answer
        assert answer.last_seq == after.last_seq == len(kinds)
        if i % 3 == 2:
            assert (after.owner, after.attempt, after.error is not None) == (None, 2, True)
            assert kinds[1:] == [EventKind.STEP_FAILED, EventKind.RETRY_SCHEDULED]
        else:
            assert (after.status, after.current_step) == (SagaStatus.RUNNING, "B")
            assert after.outputs == {"A": {"x": i, "deep": [i, {"k": "é"}]}}
            assert after.lease_expires_at is not None
            assert kinds[1:] == [EventKind.STEP_SUCCEEDED]


@pytest.mark.parametrize(
    ("stale", "refusal"), [("epoch", LeaseLostError), ("seq", StaleStateError)]
)
async def test_a_lone_fenced_write_is_refused(
    backend: Backend, stale: str, refusal: type[Exception]
) -> None:
    """The run moved on (a failure released it): a writer's old copy of it is refused."""
    run = await backend.insert(owner="w1")
    await backend.store.commit(run.id, run.epoch, failed(backend, run), run.last_seq)
    moved = await backend.read(run.id)
    epoch = run.epoch + 1 if stale == "epoch" else run.epoch
    with pytest.raises(refusal):
        await backend.store.commit(run.id, epoch, succeeded(backend, run, {"x": 1}), run.last_seq)
    assert await backend.read(run.id) == moved
