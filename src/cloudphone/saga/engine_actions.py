"""The engine's operator actions: ``retry``, ``cancel``, ``resolve``, ``migrate`` and ``fork``.

Each is a decision of :mod:`cloudphone.saga.operators` that the store applies to the locked
run (``_operate``). ``migrate`` and ``fork`` decide from the run's history, read just before
the run is locked; the decision checks that nothing was appended in between (``last_seq``),
and the read is repeated if it was, so the rules always see the history of the run they
change.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from cloudphone.saga import operators
from cloudphone.saga.errors import OperatorActionError, SagaNotFoundError, UnknownSagaTypeError
from cloudphone.saga.history import StepsDone, fork_start
from cloudphone.saga.metrics import SagaMetrics
from cloudphone.saga.ports import Clock
from cloudphone.saga.progress import OperatorChange
from cloudphone.saga.records import SagaEvent, SagaRun
from cloudphone.saga.registry import SagaRegistry
from cloudphone.saga.store.base import NewRun, SagaStore

if TYPE_CHECKING:
    from cloudphone.saga.definition import Saga

_READS = 3
"""Times the history is read again when the run moved before it could be locked."""

Decide = Callable[[SagaRun], OperatorChange]
Build = Callable[[SagaRun, Sequence[SagaEvent]], tuple[Decide, NewRun | None]]
"""Builds the decision (and a run to insert with it) from a run and its history."""


class _RunMoved(OperatorActionError):
    """The run changed between reading its history and locking it."""


def _unmoved(run: SagaRun, seen: int) -> None:
    if run.last_seq != seen:
        raise _RunMoved(f"saga {run.id} kept moving while the action was decided; try again")


class OperatorActions:
    """The operator actions, mixed into :class:`~cloudphone.saga.SagaEngine`."""

    store: SagaStore
    registry: SagaRegistry
    clock: Clock
    metrics: SagaMetrics

    if TYPE_CHECKING:

        async def _operate(
            self, saga_id: str, decide: Decide, spawn: NewRun | None = None
        ) -> SagaRun: ...

    async def retry(
        self,
        saga_id: str,
        *,
        note: str | None = None,
        actor: str | None = None,
        forward: bool = False,
    ) -> SagaRun:
        """Resume a FAILED run at the step that failed.

        Args:
            saga_id: The run.
            note: Why (kept in the history).
            actor: Who (kept in the history).
            forward: For a run that failed while compensating: go forward again from the step
                whose compensation failed, instead of retrying the compensation.
        """
        return await self._operate(
            saga_id, lambda run: operators.retry(run, self.clock.now(), actor, note, forward)
        )

    async def cancel(self, saga_id: str, *, actor: str | None = None) -> SagaRun:
        """Cancel a run before its pivot; its started steps are compensated."""
        return await self._operate(
            saga_id, lambda run: operators.cancel(run, self._saga_of(run), self.clock.now(), actor)
        )

    async def resolve(self, saga_id: str, note: str, *, actor: str | None = None) -> SagaRun:
        """Close a FAILED run by hand with a note; it stays FAILED, marked resolved."""
        return await self._operate(
            saga_id, lambda run: operators.resolve(run, self.clock.now(), actor, note)
        )

    def _saga_of(self, run: SagaRun) -> Saga:
        """The definition ``run`` is pinned to (an operator refusal if it is not registered)."""
        try:
            return self.registry.require(run.saga_type, run.saga_version)
        except UnknownSagaTypeError as error:
            raise OperatorActionError(
                f"cannot act on saga {run.id}: {error}; migrate it to a registered version, "
                "or act from a process that has its own"
            ) from None

    async def migrate(
        self,
        saga_id: str,
        to_version: int,
        *,
        note: str | None = None,
        actor: str | None = None,
    ) -> SagaRun:
        """Move a run to another registered version of its saga (an operator's act).

        Steps are matched by name. Refused (OperatorActionError) when the target lacks the
        run's current step or a step it already did, reorders the steps it did, or would put
        it on the other side of a pivot; also for finished and resolved runs. An active run is
        taken from its worker (fenced) and goes on under the target with any worker that has
        it; a FAILED run stays FAILED (retry it afterwards). The history records the move.

        Args:
            saga_id: The run.
            to_version: A version of its saga registered with this engine.
            note: Why (kept in the history).
            actor: Who (kept in the history).
        """

        def build(run: SagaRun, events: Sequence[SagaEvent]) -> tuple[Decide, None]:
            target = self.registry.get((run.saga_type, to_version))
            if target is None:
                versions = ", ".join(map(str, self.registry.versions(run.saga_type))) or "none"
                raise OperatorActionError(
                    f"cannot migrate saga {saga_id}: version {to_version} of {run.saga_type} "
                    f"is not registered here (registered: {versions})"
                )
            source = self.registry.get((run.saga_type, run.saga_version))
            done = StepsDone.of(events)

            def decide(locked: SagaRun) -> OperatorChange:
                _unmoved(locked, run.last_seq)
                now = self.clock.now()
                return operators.migrate(locked, done, source, target, now, actor, note)

            return decide, None

        run, _ = await self._decided(saga_id, build)
        return run

    async def fork(
        self,
        saga_id: str,
        from_step: str,
        *,
        note: str | None = None,
        force: bool = False,
        actor: str | None = None,
    ) -> str:
        """Start a new run of a finished one's version from ``from_step``; returns its id.

        The fork's data is the original's as it stood before ``from_step`` (its input and the
        outputs of the steps before); the steps from there run again, with new idempotency
        keys (the fork has its own id). Both histories name the other (``run_forked`` in the
        original, ``saga_started`` in the fork) and the fork's ``forked_from`` is set.

        Refused (OperatorActionError) when the original is not terminal or its version is
        not registered here, and, unless ``force``, when ``from_step`` is not after a pivot the
        original completed, or comes after a step the original undid or never completed.
        A forced fork says so in both histories.

        Args:
            saga_id: The original run.
            from_step: The first step the fork runs.
            note: Why (kept in both histories).
            force: Override the refusals that ``force`` may override.
            actor: Who; the fork's ``started_by``.
        """

        def build(run: SagaRun, events: Sequence[SagaEvent]) -> tuple[Decide, NewRun]:
            saga = self._forkable(run)
            done = StepsDone.of(events)
            overrode = operators.check_fork(run, done, saga, from_step, force)
            new = self._fork_run(run, events, saga, from_step, overrode, actor, note)

            def decide(locked: SagaRun) -> OperatorChange:
                _unmoved(locked, run.last_seq)
                again = operators.check_fork(locked, done, saga, from_step, force)
                return operators.forked(locked, new.id, from_step, new.now, actor, note, again)

            return decide, new

        _, new = await self._decided(saga_id, build)
        assert new is not None
        self.metrics.record_started(new.saga_type)
        return new.id

    def _forkable(self, run: SagaRun) -> Saga:
        saga = self.registry.get((run.saga_type, run.saga_version))
        if saga is None:
            raise OperatorActionError(
                f"cannot fork saga {run.id}: version {run.saga_version} of {run.saga_type} is "
                "not registered here (a fork runs on its original's version)"
            )
        return saga

    def _fork_run(
        self,
        run: SagaRun,
        events: Sequence[SagaEvent],
        saga: Saga,
        from_step: str,
        overrode: list[str],
        actor: str | None,
        note: str | None,
    ) -> NewRun:
        rerun = [step.name for step in saga.steps[saga.step_named(from_step).index :]]
        start = fork_start(run, events, rerun)
        if start is None:
            raise OperatorActionError(
                f"cannot fork saga {run.id}: its history predates per-step outputs, so its "
                f"data before {from_step} is not known"
            )
        now = self.clock.now()
        facts = operators.fork_facts(from_step, actor, note, overrode)
        return NewRun(
            id=str(uuid.uuid4()),
            saga_type=run.saga_type,
            data=start[0],
            outputs=start[1],
            first_step=from_step,
            idempotency_key=None,
            started_by=actor,
            deadline_at=now + saga.timeout if saga.timeout else None,
            now=now,
            saga_version=run.saga_version,
            forked_from=run.id,
            detail={"forked_from": run.id, **facts},
        )

    async def _decided(self, saga_id: str, build: Build) -> tuple[SagaRun, NewRun | None]:
        """Read the run and its history, build the decision, apply it on the locked run.

        Returns the run as changed and the run inserted with it (if any).
        """
        moved: _RunMoved | None = None
        for _ in range(_READS):
            run = await self.store.get(saga_id)
            if run is None:
                raise SagaNotFoundError(f"no saga run {saga_id!r}")
            decide, spawn = build(run, await self.store.history(saga_id))
            try:
                return await self._operate(saga_id, decide, spawn), spawn
            except _RunMoved as error:
                moved = error
        assert moved is not None
        raise moved
