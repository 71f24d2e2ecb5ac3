"""What a run's history says about it: the steps it did and undid, its data before a step (pure).

Migrating and forking a run decide from its history, not from a definition: the run may be
pinned to a version this process does not have (that is often why it is being migrated).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from cloudphone.saga.records import EventKind, SagaEvent, SagaRun


@dataclass(frozen=True)
class StepsDone:
    """The forward steps a run completed, and the compensations it completed.

    Attributes:
        done: Steps that succeeded, in the order they first did.
        undone: Steps whose compensation succeeded.
        pivot: The step recorded as the pivot when it succeeded, if one did.
    """

    done: tuple[str, ...]
    undone: frozenset[str]
    pivot: str | None

    @classmethod
    def of(cls, events: Sequence[SagaEvent]) -> StepsDone:
        """Read them from a run's history."""
        done: dict[str, None] = {}
        undone: set[str] = set()
        pivot = None
        for event in events:
            if event.step is None:
                continue
            if event.kind is EventKind.STEP_SUCCEEDED:
                done.setdefault(event.step)
                if event.detail.get("pivot"):
                    pivot = event.step
            elif event.kind is EventKind.COMPENSATION_SUCCEEDED:
                undone.add(event.step)
        return cls(tuple(done), frozenset(undone), pivot)


def undo_output(data: dict[str, Any], event: SagaEvent) -> None:
    """Take a ``step_succeeded`` event's output off ``data``, putting back what it replaced."""
    replaced: dict[str, Any] = event.detail.get("replaced", {})
    for key in event.detail.get("output", {}):
        if key in replaced:
            data[key] = replaced[key]
        else:
            data.pop(key, None)


def data_before(
    run: SagaRun, events: Sequence[SagaEvent], rerun: Collection[str]
) -> dict[str, Any] | None:
    """The run's data as it stood before the first success of any step in ``rerun``.

    That is its input plus the outputs of the steps that succeeded before (a fork's data).
    Walks back from the current data through the outputs the ``step_succeeded`` events
    record. None when the history predates per-step outputs (it cannot be known honestly).
    """
    successes = [e for e in events if e.kind is EventKind.STEP_SUCCEEDED]
    if any("output" not in e.detail for e in successes):
        return None
    first = next((i for i, e in enumerate(successes) if e.step in rerun), len(successes))
    data = dict(run.data)
    for event in reversed(successes[first:]):
        undo_output(data, event)
    return data
