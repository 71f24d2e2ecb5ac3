"""Migrating a run to another version: the operator's decision, made without I/O."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from cloudphone.saga import EventKind, OperatorActionError, Saga, SagaStatus, operators
from cloudphone.saga.history import StepsDone
from tests.unit.test_operators import NOW, make_run

S = SagaStatus


async def act(ctx: Any) -> None:
    return None


async def undo(ctx: Any) -> None:
    return None


def version(number: int, steps: Sequence[str], pivot: str | None = "P") -> Saga:
    """Version ``number`` of ``op_saga`` with ``steps`` (the pivot's predecessors undoable)."""
    saga = Saga("op_saga", version=number)
    before = True
    for name in steps:
        handle = saga.step(name, pivot=name == pivot)(act)
        if before:
            handle.compensate(undo)
        before = before and name != pivot
    return saga


V1 = version(1, ["A", "B", "P", "C"])


def done(*steps: str, undone: Sequence[str] = (), pivot: str | None = None) -> StepsDone:
    return StepsDone(tuple(steps), frozenset(undone), pivot)


def migrate(target: Saga, steps: StepsDone, source: Saga | None = V1, **run: Any) -> Any:
    fields = {"saga_version": 1, "status": S.RUNNING, "current_step": "B", "resolution": None}
    return operators.migrate(
        make_run(**{**fields, **run}), steps, source, target, NOW, "ops", "move it"
    )


def test_an_active_run_moves_to_the_target_and_is_handed_to_any_worker() -> None:
    change = migrate(version(2, ["A", "B", "P", "C"]), done("A"), owner="w1")
    assert change.values == {
        "saga_version": 2,
        "updated_at": NOW,
        "owner": None,
        "lease_expires_at": None,
        "next_run_at": NOW,
    }
    assert change.bump_epoch is True
    (event,) = change.events
    assert (event.kind, event.step, event.at) == (EventKind.OPERATOR_MIGRATED, "B", NOW)
    assert event.detail == {"actor": "ops", "note": "move it", "from_version": 1, "to_version": 2}


def test_a_failed_run_moves_and_stays_failed_for_a_retry() -> None:
    change = migrate(version(2, ["A", "B", "P", "C"]), done("A"), status=S.FAILED)
    assert change.values == {"saga_version": 2, "updated_at": NOW}
    assert change.bump_epoch is True


def test_steps_of_the_target_this_run_never_ran_are_recorded_as_skipped() -> None:
    change = migrate(version(2, ["A", "CHECK", "B", "P", "C"]), done("A"))
    assert change.events[0].detail["skipped"] == ["CHECK"]


def test_a_run_can_move_back_to_an_older_version() -> None:
    change = migrate(V1, done("A"), source=version(2, ["A", "B", "P", "C"]), saga_version=2)
    assert change.values["saga_version"] == 1
    assert change.events[0].detail["from_version"] == 2


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ({"status": S.COMPLETED, "current_step": None}, "only active and FAILED runs move"),
        ({"status": S.COMPENSATED}, "only active and FAILED runs move"),
        ({"status": S.TIMED_OUT}, "only active and FAILED runs move"),
        ({"status": S.FAILED, "resolution": "done by hand"}, "resolved by hand"),
        ({"saga_version": 2}, "already on version 2"),
        ({"saga_type": "other"}, "to a version of 'op_saga'"),
    ],
)
def test_runs_that_cannot_move(run: dict[str, Any], message: str) -> None:
    with pytest.raises(OperatorActionError, match=message):
        migrate(version(2, ["A", "B", "P", "C"]), done("A"), **run)


@pytest.mark.parametrize(
    ("steps", "dids", "message"),
    [
        (["A", "X", "P", "C"], ("A",), "has no step 'B' \\(its current step\\)"),
        (["B", "P", "C"], ("A",), "lacks A, which it has already done"),
        (["A2", "A1", "B", "P", "C"], ("A1", "A2"), "orders the steps it has done"),
        (["B", "A", "P", "C"], ("A",), "puts A, already done, at or after its current step"),
    ],
)
def test_a_target_that_lacks_or_reorders_what_was_done_is_refused(
    steps: list[str], dids: tuple[str, ...], message: str
) -> None:
    with pytest.raises(OperatorActionError, match=message):
        migrate(version(2, steps), done(*dids))


def test_a_compensating_run_needs_every_step_still_to_undo_below_its_current_step() -> None:
    """On the way back from B, A must still come below B; C, already undone, may move."""
    compensating = {"status": S.COMPENSATING, "compensation_cause": "failed"}
    refused = version(2, ["B", "A", "P", "C"])
    with pytest.raises(OperatorActionError, match="puts A, already done, after"):
        migrate(refused, done("A"), **compensating)
    undone_above = done("A", "X", undone=["X"])
    assert migrate(version(2, ["A", "B", "X", "P"]), undone_above, **compensating).values
    # FAILED while compensating goes back the same way on retry.
    with pytest.raises(OperatorActionError, match="after its current step"):
        migrate(refused, done("A"), status=S.FAILED, compensation_cause="failed")


def test_a_run_past_its_pivot_stays_past_a_pivot() -> None:
    past = done("A", "B", "P", pivot="P")
    assert migrate(version(2, ["A", "B", "P", "D", "C"]), past, current_step="C").values
    with pytest.raises(OperatorActionError, match="not past the pivot \\(there is none\\)"):
        migrate(version(2, ["A", "B", "P", "C"], pivot=None), past, current_step="C")
    with pytest.raises(OperatorActionError, match="not past the pivot \\(C\\)"):
        migrate(version(2, ["A", "B", "P", "C"], pivot="C"), past, current_step="C")


def test_a_run_before_its_pivot_stays_before_one() -> None:
    """Version 2 makes A (done, undoable in version 1) the pivot: B would lose its undo."""
    with pytest.raises(OperatorActionError, match="has it past the pivot 'A'"):
        migrate(version(2, ["A", "B", "P", "C"], pivot="A"), done("A"))
    compensating = {"status": S.COMPENSATING, "compensation_cause": "cancelled"}
    with pytest.raises(OperatorActionError, match="has it past the pivot 'A'"):
        migrate(version(2, ["A", "B", "P", "C"], pivot="A"), done("A"), **compensating)


def test_without_its_own_version_the_history_says_whether_the_pivot_was_passed() -> None:
    """Version 1 is gone from this process: the pivot marker of the history decides."""
    target = version(2, ["A", "B", "P", "C"])
    assert migrate(target, done("A", "B", "P", pivot="P"), source=None, current_step="C")
    with pytest.raises(OperatorActionError, match="has it past the pivot 'P'"):
        migrate(target, done("A", "B", "P"), source=None, current_step="C")
