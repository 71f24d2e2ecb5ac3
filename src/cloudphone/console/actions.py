"""Operator actions on a saga run, as the console offers them (the engine decides).

Each action says when it applies, so the page offers only the buttons that make sense now;
the engine still checks every action under a row lock, and a refusal (someone else acted
first, the pivot passed meanwhile) is shown in place with the engine's reason.

Seam: ``fork`` (re-run a terminal run from a chosen step) joins :data:`ACTIONS` once the
engine has it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cloudphone.saga import Saga, SagaEngine, SagaRun, SagaStatus


@dataclass(frozen=True)
class Action:
    """One operator action.

    Attributes:
        name: Its stable name (``data-action`` and the URL's last segment).
        label: The button's text.
        explain: What it does, shown in the confirmation.
        note: ``required``, ``optional`` or ``none``: whether the confirmation asks for a note.
        applies: Whether it makes sense for the run now.
        perform: Calls the engine: (engine, run id, actor, note) → the run after the action.
        done: What the result line says on success.
    """

    name: str
    label: str
    explain: str
    note: str
    applies: Callable[[SagaRun, Saga | None], bool]
    perform: Callable[[SagaEngine, str, str, str | None], Awaitable[SagaRun]]
    done: str


def _unresolved_failure(run: SagaRun, saga: Saga | None) -> bool:
    return run.status is SagaStatus.FAILED and run.resolution is None


def _failed_compensating(run: SagaRun, saga: Saga | None) -> bool:
    return _unresolved_failure(run, saga) and bool(run.compensation_cause)


def _cancellable(run: SagaRun, saga: Saga | None) -> bool:
    if run.status not in (SagaStatus.PENDING, SagaStatus.RUNNING) or run.cancel_requested:
        return False
    if saga is None or saga.pivot_index is None or run.current_step is None:
        return True  # unknown here: let the engine decide
    names = [step.name for step in saga.steps]
    if run.current_step not in names:
        return True
    return names.index(run.current_step) <= saga.pivot_index


async def _retry(engine: SagaEngine, run_id: str, actor: str, note: str | None) -> SagaRun:
    return await engine.retry(run_id, actor=actor, note=note)


async def _retry_forward(engine: SagaEngine, run_id: str, actor: str, note: str | None) -> SagaRun:
    return await engine.retry(run_id, actor=actor, note=note, forward=True)


async def _cancel(engine: SagaEngine, run_id: str, actor: str, note: str | None) -> SagaRun:
    return await engine.cancel(run_id, actor=actor)


async def _resolve(engine: SagaEngine, run_id: str, actor: str, note: str | None) -> SagaRun:
    return await engine.resolve(run_id, note or "", actor=actor)


ACTIONS: dict[str, Action] = {
    action.name: action
    for action in (
        Action(
            "retry",
            "Retry",
            "Resume the run at the step that failed, in the direction it was going.",
            "optional",
            _unresolved_failure,
            _retry,
            "Retry accepted: a worker picks the run up again.",
        ),
        Action(
            "retry-forward",
            "Retry forward",
            "Go forward again from the step whose compensation failed, instead of undoing it "
            "(forward recovery: e.g. the provider did take the refund).",
            "optional",
            _failed_compensating,
            _retry_forward,
            "Forward retry accepted: the run moves forward again.",
        ),
        Action(
            "cancel",
            "Cancel",
            "Stop the run before its pivot: every step that started is compensated.",
            "none",
            _cancellable,
            _cancel,
            "Cancel accepted: what started is being compensated.",
        ),
        Action(
            "resolve",
            "Resolve",
            "Close this FAILED run by hand. It stays FAILED, marked resolved, with your note.",
            "required",
            _unresolved_failure,
            _resolve,
            "Resolved: the note is in the timeline.",
        ),
    )
}
"""Every action the console offers, by name, in button order."""


def applicable(run: SagaRun, saga: Saga | None) -> list[Action]:
    """The actions that make sense for ``run`` now."""
    return [action for action in ACTIONS.values() if action.applies(run, saga)]
