"""``progress_of``: a Progress built without the frozen ``__init__`` is the same value."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from cloudphone.saga.progress import NewEvent, Progress, carrying, progress_of
from cloudphone.saga.records import EventKind
from cloudphone.saga.state import SagaStatus

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


def fields(**changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "status": SagaStatus.RUNNING,
        "step_index": 1,
        "step": "T1",
        "attempt": 1,
        "output_step": "T0",
        "output": {"a": 1},
        "error": None,
        "compensation_cause": None,
        "keep_lease": True,
        "next_run_at": NOW,
        "finished": False,
        "deadline_noted": False,
        "clear_cancel": False,
        "events": (NewEvent(EventKind.STEP_SUCCEEDED, at=NOW, step="T0", attempt=1),),
        "now": NOW,
    }
    values.update(changes)
    return values


def test_it_equals_the_dataclass_built_the_usual_way_defaults_included() -> None:
    fast, usual = progress_of(fields()), Progress(**fields())  # type: ignore[arg-type]
    assert fast == usual
    assert (fast.retry_since, fast.carried_step, fast.carried_output) == (None, None, None)
    assert dataclasses.asdict(fast) == dataclasses.asdict(usual)
    assert dataclasses.replace(fast, attempt=2) == dataclasses.replace(usual, attempt=2)


def test_it_stays_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        progress_of(fields()).attempt = 2  # type: ignore[misc]


def test_a_name_that_is_not_a_field_is_refused() -> None:
    with pytest.raises(TypeError, match="stauts"):
        progress_of(fields(stauts=SagaStatus.FAILED))


def test_carrying_appends_the_carried_events_first_and_stores_both_outputs() -> None:
    carried = progress_of(fields())
    later = progress_of(fields(output_step="T2", output=None, events=()))
    both = carrying(later, carried)
    assert both.events == carried.events
    assert both.outputs_patch() == {"T0": {"a": 1}, "T2": None}
    assert both == dataclasses.replace(
        later, events=carried.events, carried_step="T0", carried_output={"a": 1}
    )
