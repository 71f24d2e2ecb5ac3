"""Operator actions on a saga run, as the console offers them (the engine decides).

Each action says when it applies, so the page offers only the buttons that make sense now;
the engine still checks every action under a row lock, and a refusal (someone else acted
first, the pivot passed meanwhile) is shown in place with the engine's reason.

``fork`` starts a new run: its confirmation asks for the step to start from (and offers
``force``), and the result links to the new run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cloudphone.saga import Saga, SagaEngine, SagaRun, SagaStatus


@dataclass(frozen=True)
class ActionInput:
    """What the operator gave in the confirmation.

    Attributes:
        actor: Who acts (the signed-in admin).
        note: The note, if any.
        from_step: The step to fork from (fork only).
        force: Override the refusals ``force`` may override (fork only).
    """

    actor: str
    note: str | None = None
    from_step: str | None = None
    force: bool = False


@dataclass(frozen=True)
class Action:
    """One operator action.

    Attributes:
        name: Its stable name (``data-action`` and the URL's last segment).
        label: The button's text.
        explain: What it does, shown in the confirmation.
        note: ``required``, ``optional`` or ``none``: whether the confirmation asks for a note.
        applies: Whether it makes sense for the run now (``saga``: the definition of the
            run's version, None when this process does not have it).
        perform: Calls the engine: (engine, run id, input) → the run after the action (for
            fork: the new run).
        done: What the result line says on success.
        step: The confirmation asks for a step to start from, and offers ``force``.
    """

    name: str
    label: str
    explain: str
    note: str
    applies: Callable[[SagaRun, Saga | None], bool]
    perform: Callable[[SagaEngine, str, ActionInput], Awaitable[SagaRun]]
    done: str
    step: bool = False


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


def _forkable(run: SagaRun, saga: Saga | None) -> bool:
    return run.status.is_terminal and saga is not None


async def _retry(engine: SagaEngine, run_id: str, given: ActionInput) -> SagaRun:
    return await engine.retry(run_id, actor=given.actor, note=given.note)


async def _retry_forward(engine: SagaEngine, run_id: str, given: ActionInput) -> SagaRun:
    return await engine.retry(run_id, actor=given.actor, note=given.note, forward=True)


async def _cancel(engine: SagaEngine, run_id: str, given: ActionInput) -> SagaRun:
    return await engine.cancel(run_id, actor=given.actor)


async def _resolve(engine: SagaEngine, run_id: str, given: ActionInput) -> SagaRun:
    return await engine.resolve(run_id, given.note or "", actor=given.actor)


async def _fork(engine: SagaEngine, run_id: str, given: ActionInput) -> SagaRun:
    assert given.from_step is not None
    fork_id = await engine.fork(
        run_id, given.from_step, note=given.note, force=given.force, actor=given.actor
    )
    return await engine.get(fork_id)


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
        Action(
            "fork",
            "Fork",
            "Start a new run of this version with the data as it stood before the chosen step; "
            "the steps from there run again, with new idempotency keys. This run stays as it "
            "is; both histories link to each other.",
            "optional",
            _forkable,
            _fork,
            "Forked: a new run starts from the chosen step.",
            step=True,
        ),
    )
}
"""Every action the console offers, by name, in button order."""


def applicable(run: SagaRun, saga: Saga | None) -> list[Action]:
    """The actions that make sense for ``run`` now."""
    return [action for action in ACTIONS.values() if action.applies(run, saga)]
