"""The console's pure parts for versions and forks: the plan of a fork, the timeline, the button."""

from __future__ import annotations

from cloudphone.console.actions import applicable
from cloudphone.console.plan import step_plan
from cloudphone.console.timeline import timeline
from cloudphone.saga import SagaStatus
from tests.unit.console.test_plan import K, event, run, saga


def test_a_forks_steps_before_its_start_are_inherited_from_the_original() -> None:
    events = [
        event(1, K.SAGA_STARTED, forked_from="r0", from_step="RECORD"),
        event(2, K.STEP_SUCCEEDED, "RECORD", output={}),
    ]
    fork = run(SagaStatus.COMPLETED, None, {}, forked_from="r0")
    assert [s.state for s in step_plan(saga(), fork, events)] == ["inherited", "inherited", "done"]
    plain = run(SagaStatus.COMPLETED, None, {})
    assert [s.state for s in step_plan(saga(), plain, events)][:2] == ["not reached"] * 2


def test_moves_and_forks_read_in_words_with_their_facts() -> None:
    events = [
        event(1, K.OPERATOR_MIGRATED, "HOLD", from_version=1, to_version=2, skipped=["X", "Y"]),
        event(
            2, K.RUN_FORKED, "HOLD", fork="f1", from_step="HOLD", forced=True, overrode=["a", "b"]
        ),
    ]
    forked, moved = timeline(events)
    assert (moved.label, forked.label) == ("Moved to another version", "Forked")
    assert moved.facts == [("from version", 1), ("to version", 2), ("skips", "X; Y")]
    assert forked.facts == [
        ("new run", "f1"),
        ("from step", "HOLD"),
        ("forced", True),
        ("overriding", "a; b"),
    ]


def test_fork_is_offered_for_finished_runs_of_a_version_this_process_has() -> None:
    def offered(status: SagaStatus, known: bool = True) -> set[str]:
        return {a.name for a in applicable(run(status, "HOLD", {}), saga() if known else None)}

    for status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.TIMED_OUT):
        assert offered(status) == {"fork"}
    assert "fork" in offered(SagaStatus.FAILED)
    assert "fork" not in offered(SagaStatus.RUNNING)
    assert offered(SagaStatus.COMPLETED, known=False) == set()
