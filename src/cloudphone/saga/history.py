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


def fork_start(
    run: SagaRun, events: Sequence[SagaEvent], rerun: Collection[str]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A fork's input and outputs: the run's input, and the outputs of the steps not re-run.

    That is the run's data as it stood before the first of ``rerun`` (each step's output is
    kept under its name). None when a step succeeded without a kept output: the run started
    before outputs were kept per step, and its data before a step cannot be known honestly.
    """
    successes = [e.step for e in events if e.kind is EventKind.STEP_SUCCEEDED and e.step]
    if any(step not in run.outputs for step in successes):
        return None
    kept = {step: output for step, output in run.outputs.items() if step not in rerun}
    return dict(run.input), kept
