"""What a saga detail page shows, computed from the definition, the run and its history (pure).

* :func:`step_plan`: every step of the definition in order, pivot marked, each with its state
  (done, failed, compensated, not reached, …), attempts and time spent.
* :func:`data_after_steps`: the data as it stood after each step: the run's input, then each
  succeeded step's output as the run keeps it (``SagaRun.outputs``).
* :func:`redact`: secrets hidden by key name before anything reaches the page.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cloudphone.saga import EventKind, Saga, SagaEvent, SagaRun, SagaStatus

REDACTED = "••• redacted •••"
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|api[_-]?key|private[_-]?key|authorization|credential"
    r"|card[_-]?number|cvc|cvv)",
    re.IGNORECASE,
)

_ATTEMPT_KINDS = (EventKind.STEP_SUCCEEDED, EventKind.STEP_FAILED)
_STATE_AFTER = {
    EventKind.STEP_SUCCEEDED: "done",
    EventKind.STEP_FAILED: "failed",
    EventKind.STEP_POSTPONED: "waiting",
    EventKind.COMPENSATION_SUCCEEDED: "compensated",
    EventKind.COMPENSATION_FAILED: "compensation failed",
}
"""A step's state after the last event about it (later events about the step win)."""


@dataclass(frozen=True)
class PlanStep:
    """One step of the plan.

    Attributes:
        number: Position, from 1.
        name: Step name.
        kind: ``compensatable``, ``pivot`` or ``retriable`` (``unknown`` without a definition).
        compensable: The step has a compensation.
        state: ``done``, ``running``, ``retrying``, ``waiting``, ``failed``, ``compensating``,
            ``compensated``, ``compensation failed``, ``inherited`` (a fork's step before the
            one it started from: done by the original) or ``not reached``.
        attempts: Finished forward attempts (succeeded or failed).
        duration_ms: Time its forward attempts took, or None before any finished.
        current: The run is at this step now.
    """

    number: int
    name: str
    kind: str
    compensable: bool
    state: str
    attempts: int
    duration_ms: float | None
    current: bool


def step_plan(saga: Saga | None, run: SagaRun, events: Sequence[SagaEvent]) -> list[PlanStep]:
    """The plan of ``run``: its definition's steps (or, without one, the steps seen so far)."""
    if saga is not None:
        shape = [(s.name, s.kind.value, s.compensation is not None) for s in saga.steps]
    else:
        seen = dict.fromkeys(e.step for e in events if e.step is not None)
        shape = [(name, "unknown", False) for name in seen]
    states: dict[str, str] = {}
    attempts: dict[str, int] = {}
    spent: dict[str, float] = {}
    for event in events:
        if event.step is None:
            continue
        if event.kind in _STATE_AFTER:
            states[event.step] = _STATE_AFTER[event.kind]
        if event.kind in _ATTEMPT_KINDS:
            attempts[event.step] = attempts.get(event.step, 0) + 1
        if event.kind in (*_ATTEMPT_KINDS, EventKind.STEP_POSTPONED):
            spent[event.step] = spent.get(event.step, 0.0) + float(
                event.detail.get("duration_ms", 0.0)
            )
    inherited = _inherited(run, [name for name, _, _ in shape], events)
    plan = []
    for number, (name, kind, compensable) in enumerate(shape, start=1):
        current = run.current_step == name and not _finished_forward(run)
        state = _live_state(run, states.get(name)) if current else states.get(name)
        if state is None and name in inherited:
            state = "inherited"
        plan.append(
            PlanStep(
                number=number,
                name=name,
                kind=kind,
                compensable=compensable,
                state=state or "not reached",
                attempts=attempts.get(name, 0),
                duration_ms=spent.get(name),
                current=current,
            )
        )
    return plan


def _inherited(run: SagaRun, names: list[str], events: Sequence[SagaEvent]) -> set[str]:
    """A fork's steps before the one it started from (their outputs came with its data)."""
    started = events[0].detail if events and events[0].kind is EventKind.SAGA_STARTED else {}
    from_step = started.get("from_step")
    if run.forked_from is None or from_step not in names:
        return set()
    return set(names[: names.index(from_step)])


def _finished_forward(run: SagaRun) -> bool:
    return run.status is SagaStatus.COMPLETED


def _live_state(run: SagaRun, last: str | None) -> str | None:
    """The state of the step the run is at, from the run's status."""
    if run.status is SagaStatus.COMPENSATING:
        return "compensating"
    if run.status in (SagaStatus.RUNNING, SagaStatus.PENDING):
        if last == "failed":
            return "retrying"
        return "waiting" if last == "waiting" else "running"
    return last


@dataclass(frozen=True)
class DataSnapshot:
    """The saga data right after one step succeeded.

    Attributes:
        step: The step.
        attempt: Its successful attempt.
        data: The data then (redacted).
        added: Keys the step set.
    """

    step: str
    attempt: int | None
    data: dict[str, Any]
    added: list[str]


def data_after_steps(run: SagaRun, events: Sequence[SagaEvent]) -> list[DataSnapshot] | None:
    """The data after each successful step, oldest first (redacted).

    The input, then the outputs of the steps that succeeded so far, in the order they did. A
    step that succeeded twice (run again by an operator) shows its latest output both times.
    Returns None for a run started before outputs were kept per step (a step that succeeded
    has none): nothing can be reconstructed honestly then.
    """
    successes = [e for e in events if e.kind is EventKind.STEP_SUCCEEDED and e.step]
    if any(e.step not in run.outputs for e in successes):
        return None
    data = dict(run.input)
    snapshots: list[DataSnapshot] = []
    for event in successes:
        output: dict[str, Any] = run.outputs.get(event.step or "") or {}
        data.update(output)
        snapshots.append(
            DataSnapshot(event.step or "?", event.attempt, redact(data), sorted(output))
        )
    return snapshots


def redact(value: Any) -> Any:
    """``value`` with every entry whose key names a secret replaced by a marker."""
    if isinstance(value, dict):
        return {
            key: REDACTED if _SECRET_KEY.search(str(key)) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value
