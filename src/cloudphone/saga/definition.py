"""Saga definitions: a named, ordered list of steps with compensations and a pivot."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar, overload

from cloudphone.saga.context import StepContext
from cloudphone.saga.errors import SagaDefinitionError
from cloudphone.saga.retry import RetryPolicy

StepAction = Callable[[StepContext], Awaitable[Mapping[str, Any] | None]]
"""A step: reads ``ctx.data``, acts, returns a JSON object merged into the data (or None)."""

Compensation = Callable[[StepContext], Awaitable[object]]
"""Undoes a step; must be idempotent and safe when there is nothing to undo."""

SagaKey = tuple[str, int]
"""A saga type and one of its versions: what a run is pinned to and a worker can drive."""

A = TypeVar("A", bound=StepAction)
C = TypeVar("C", bound=Compensation)

_SAGA_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,99}")
_STEP_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,99}")


class StepKind(StrEnum):
    """The role of a step relative to the saga's point of no return."""

    COMPENSATABLE = "compensatable"
    """Before the pivot: may be undone; fails for good after its attempts."""

    PIVOT = "pivot"
    """The point of no return: once it succeeds the saga only moves forward."""

    RETRIABLE = "retriable"
    """After the pivot: retried until it succeeds; never compensated."""


@dataclass(frozen=True)
class Step:
    """One persisted step of a saga definition.

    Attributes:
        name: Stable name, stored in the database; renaming it orphans running sagas.
        index: Position in the saga, 0-based.
        action: The step's coroutine function.
        kind: Compensatable, pivot or retriable, from its place relative to the pivot.
        transactional: The action gets ``ctx.session`` in the engine's progress transaction.
        retry: Per-step retry policy, or None for the saga's.
        timeout: Per-attempt timeout, or None for none.
        compensation: Undo function, or None when the step needs no undo.
        compensation_transactional: The compensation gets ``ctx.session`` in the progress
            transaction.
    """

    name: str
    index: int
    action: StepAction
    kind: StepKind
    transactional: bool = False
    retry: RetryPolicy | None = None
    timeout: timedelta | None = None
    compensation: Compensation | None = None
    compensation_transactional: bool = False


class StepHandle(Generic[A]):
    """What ``@saga.step(...)`` returns: the function itself plus ``.compensate``."""

    def __init__(self, saga: Saga, name: str, action: A) -> None:
        self._saga = saga
        self.name = name
        self.action = action
        self.__doc__ = action.__doc__
        self.__wrapped__ = action

    async def __call__(self, ctx: StepContext) -> Mapping[str, Any] | None:
        """Call the step action directly (handy in unit tests)."""
        return await self.action(ctx)

    @overload
    def compensate(self, fn: C, /) -> C: ...

    @overload
    def compensate(
        self, fn: None = None, /, *, transactional: bool | None = None
    ) -> Callable[[C], C]: ...

    def compensate(
        self, fn: C | None = None, /, *, transactional: bool | None = None
    ) -> C | Callable[[C], C]:
        """Register the compensation of this step.

        Use as ``@step.compensate`` or ``@step.compensate(transactional=True)``. A compensation
        is transactional by default when its step is.
        """

        def register(comp: C) -> C:
            self._saga._set_compensation(self.name, comp, transactional)
            return comp

        if fn is not None:
            return register(fn)
        return register


class Saga:
    """A saga definition: stable name, deadline, default retry policy and ordered steps.

    Example::

        refund = Saga("payment_refund", timeout=timedelta(minutes=5))

        @refund.step("SET_REFUNDING_STATUS", transactional=True)
        async def set_refunding(ctx: StepContext) -> dict[str, Any] | None: ...

        @set_refunding.compensate
        async def release(ctx: StepContext) -> None: ...

        @refund.step("CALL_PROVIDER_REFUND", pivot=True, timeout=timedelta(seconds=30))
        async def call_provider(ctx: StepContext) -> dict[str, Any] | None: ...
    """

    def __init__(
        self,
        name: str,
        *,
        version: int = 1,
        timeout: timedelta | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Define a saga type.

        Args:
            name: Stable name (lowercase letters, digits, ``_.-``); persisted with every run.
            version: Version of this definition (from 1). A run is pinned to the version it
                started on; several versions of one name may be registered side by side while
                old runs drain, and new starts take the highest.
            timeout: Deadline from start; before the pivot the saga is compensated when it
                passes. None means no deadline.
            retry: Default retry policy of its steps; 4 attempts, 1 s, x2, full jitter if None.
        """
        if not _SAGA_NAME.fullmatch(name):
            raise SagaDefinitionError(
                f"saga name {name!r} must be 1-100 chars of lowercase letters, digits, '_.-', "
                "starting with a letter"
            )
        if timeout is not None and timeout <= timedelta(0):
            raise SagaDefinitionError(f"saga {name!r}: timeout must be positive, got {timeout}")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise SagaDefinitionError(
                f"saga {name!r}: version must be an int >= 1, got {version!r}"
            )
        self.name = name
        self.version = version
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self._steps: list[Step] = []
        self._pivot: int | None = None

    def __repr__(self) -> str:
        version = f", version={self.version}" if self.version != 1 else ""
        return f"Saga({self.name!r}{version}, steps={[s.name for s in self._steps]})"

    @property
    def key(self) -> SagaKey:
        """``(name, version)``: what runs of this definition are pinned to."""
        return (self.name, self.version)

    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps in order."""
        return tuple(self._steps)

    @property
    def pivot_index(self) -> int | None:
        """Index of the pivot step, or None when every step is compensatable."""
        return self._pivot

    def step(
        self,
        name: str,
        *,
        transactional: bool = False,
        pivot: bool = False,
        retry: RetryPolicy | None = None,
        timeout: timedelta | None = None,
    ) -> Callable[[A], StepHandle[A]]:
        """Decorator that appends a step.

        Args:
            name: Stable step name, unique within the saga.
            transactional: Give the action ``ctx.session`` in the engine's progress transaction.
            pivot: This step is the point of no return (at most one per saga).
            retry: Retry policy of this step (default: the saga's).
            timeout: Per-attempt timeout; an attempt running longer is cancelled and retried.
        """
        if not _STEP_NAME.fullmatch(name):
            raise SagaDefinitionError(
                f"saga {self.name!r}: step name {name!r} must be 1-100 chars of letters, digits, "
                "'_.-', starting with a letter"
            )
        self._check_new_step(name, pivot)
        if timeout is not None and timeout <= timedelta(0):
            raise SagaDefinitionError(f"saga {self.name!r}: step {name!r} timeout must be positive")

        def register(action: A) -> StepHandle[A]:
            if not _is_async(action):
                raise SagaDefinitionError(
                    f"saga {self.name!r}: step {name!r} must be an async function"
                )
            # Checked again here: a decorator may be created early or applied twice.
            self._check_new_step(name, pivot)
            if pivot:
                kind = StepKind.PIVOT
                self._pivot = len(self._steps)
            elif self._pivot is not None:
                kind = StepKind.RETRIABLE
            else:
                kind = StepKind.COMPENSATABLE
            self._steps.append(
                Step(
                    name=name,
                    index=len(self._steps),
                    action=action,
                    kind=kind,
                    transactional=transactional,
                    retry=retry,
                    timeout=timeout,
                )
            )
            return StepHandle(self, name, action)

        return register

    def _check_new_step(self, name: str, pivot: bool) -> None:
        if any(s.name == name for s in self._steps):
            raise SagaDefinitionError(f"saga {self.name!r}: duplicate step name {name!r}")
        if pivot and self._pivot is not None:
            raise SagaDefinitionError(
                f"saga {self.name!r}: step {name!r} cannot be a pivot, "
                f"{self._steps[self._pivot].name!r} already is (a saga has at most one pivot)"
            )

    def _set_compensation(self, name: str, comp: Compensation, transactional: bool | None) -> None:
        index = next(i for i, s in enumerate(self._steps) if s.name == name)
        step = self._steps[index]
        if step.kind is StepKind.RETRIABLE:
            raise SagaDefinitionError(
                f"saga {self.name!r}: step {name!r} comes after the pivot and is never "
                "compensated; it cannot have a compensation"
            )
        if step.compensation is not None:
            raise SagaDefinitionError(
                f"saga {self.name!r}: step {name!r} already has a compensation"
            )
        if not _is_async(comp):
            raise SagaDefinitionError(
                f"saga {self.name!r}: compensation of {name!r} must be an async function"
            )
        tx = step.transactional if transactional is None else transactional
        self._steps[index] = replace(step, compensation=comp, compensation_transactional=tx)

    def policy_for(self, step: Step) -> RetryPolicy:
        """The retry policy that governs ``step``."""
        return step.retry if step.retry is not None else self.retry

    def step_named(self, name: str) -> Step:
        """The step called ``name``; raises KeyError if there is none."""
        for step in self._steps:
            if step.name == name:
                return step
        raise KeyError(f"saga {self.name!r} has no step {name!r}")

    def validate(self) -> None:
        """Check the definition is complete enough to run; raises SagaDefinitionError."""
        if not self._steps:
            raise SagaDefinitionError(f"saga {self.name!r} has no steps")


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn)
