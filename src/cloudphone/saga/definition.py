"""Saga definitions: a named, ordered list of steps with compensations and a pivot."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any, Generic, overload

from pydantic import BaseModel, TypeAdapter
from typing_extensions import TypeVar

from cloudphone.saga.context import StepContext
from cloudphone.saga.errors import SagaDefinitionError
from cloudphone.saga.outputs import adapter
from cloudphone.saga.retry import RetryPolicy

StepAction = Callable[[StepContext[Any]], Awaitable[object]]
"""A step: reads ``ctx.input`` and earlier outputs, acts, returns its output.

The output is a JSON object (a dict), a pydantic model or dataclass instance (stored as its
JSON form), or None; anything else fails the step.
"""

Compensation = Callable[[StepContext[Any]], Awaitable[object]]
"""Undoes a step; must be idempotent and safe when there is nothing to undo."""

SagaKey = tuple[str, int]
"""A saga type and one of its versions: what a run is pinned to and a worker can drive."""

InputT = TypeVar("InputT", default=Any)
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
    """After the pivot (without one: from the first retriable step on): retried until it
    succeeds, within its retry budget; never compensated."""


_KIND_ORDER = {StepKind.COMPENSATABLE: 0, StepKind.PIVOT: 1, StepKind.RETRIABLE: 2}
"""Kinds in the order a saga's steps must follow: compensatable*, at most one pivot,
retriable*."""


@dataclass(frozen=True)
class Step:
    """One persisted step of a saga definition.

    Attributes:
        name: Stable name, stored in the database; renaming it orphans running sagas.
        index: Position in the saga, 0-based.
        action: The step's coroutine function.
        kind: Compensatable, pivot or retriable: given explicitly, or from its place relative
            to the pivot.
        transactional: The action gets ``ctx.session`` in the engine's progress transaction.
        retry: Per-step retry policy, or None for the saga's (with ``non_retryable`` added
            when the step declared some).
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
    non_retryable: tuple[type[BaseException], ...] = ()
    """Error types this step declared non-retryable (on top of its policy's)."""


class StepHandle(Generic[A]):
    """What ``@saga.step(...)`` returns: the function itself plus ``.compensate``."""

    def __init__(self, saga: Saga[Any], name: str, action: A) -> None:
        self._saga = saga
        self.name = name
        self.action = action
        self.__doc__ = action.__doc__
        self.__wrapped__ = action

    async def __call__(self, ctx: StepContext[Any]) -> object:
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


class Saga(Generic[InputT]):
    """A saga definition: stable name, input type, deadline, retry policy and ordered steps.

    Example::

        refund = Saga("payment_refund", input=RefundInput, timeout=timedelta(minutes=5))

        @refund.step("SET_REFUNDING_STATUS", transactional=True)
        async def set_refunding(ctx: StepContext) -> dict[str, Any] | None: ...

        @set_refunding.compensate
        async def release(ctx: StepContext) -> None: ...

        @refund.step("CALL_PROVIDER_REFUND", kind=StepKind.PIVOT, timeout=timedelta(seconds=30))
        async def call_provider(ctx: StepContext[RefundInput]) -> ProviderRefund: ...
    """

    def __init__(
        self,
        name: str,
        *,
        version: int = 1,
        input: type[InputT] | None = None,
        timeout: timedelta | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Define a saga type.

        Args:
            name: Stable name (lowercase letters, digits, ``_.-``); persisted with every run.
            version: Version of this definition (from 1). A run is pinned to the version it
                started on; several versions of one name may be registered side by side while
                old runs drain, and new starts take the highest.
            input: Type of the saga's input, a pydantic model or a dataclass: ``start()``
                validates the input into it before inserting the run, and steps read it
                parsed as ``ctx.input``. None: the input is a plain JSON object (a dict).
            timeout: Deadline from start; before the pivot the saga is compensated when it
                passes. None means no deadline.
            retry: Default retry policy of its steps; 4 attempts, 1 s, x2, full jitter and a
                24 h budget if None.
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
        self.input_type = input
        """The declared input type, or None for plain dict input."""
        self.input_adapter: TypeAdapter[InputT] | None = (
            _adapter(name, input) if input is not None else None
        )
        """Validates and dumps the input (None for plain dict input)."""
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self._steps: list[Step] = []
        self._pivot: int | None = None
        self._forward_from: int | None = None

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
        """Index of the pivot step, or None when the saga has none."""
        return self._pivot

    @property
    def forward_from(self) -> int | None:
        """Index of the first step after the point of no return, or None if there is none.

        The step after the pivot; without a pivot, the first retriable step (the saga only
        moves forward once every compensatable step before it succeeded). A run at or past
        it is never compensated.
        """
        return self._forward_from

    def step(
        self,
        name: str,
        *,
        transactional: bool = False,
        kind: StepKind | None = None,
        pivot: bool = False,
        retry: RetryPolicy | None = None,
        non_retryable: tuple[type[BaseException], ...] = (),
        timeout: timedelta | None = None,
    ) -> Callable[[A], StepHandle[A]]:
        """Decorator that appends a step.

        Args:
            name: Stable step name, unique within the saga.
            transactional: Give the action ``ctx.session`` in the engine's progress transaction.
            kind: Compensatable, pivot or retriable. Kinds must come in that order (any
                compensatable steps, at most one pivot, then retriable steps). None: from the
                step's place, retriable after a pivot or retriable step, else compensatable.
            pivot: Shorthand for ``kind=StepKind.PIVOT``.
            retry: Retry policy of this step (default: the saga's).
            non_retryable: Error types that fail this step for good at once, added to its
                policy's ``non_retryable``.
            timeout: Per-attempt timeout; an attempt running longer is cancelled and retried.
        """
        if not _STEP_NAME.fullmatch(name):
            raise SagaDefinitionError(
                f"saga {self.name!r}: step name {name!r} must be 1-100 chars of letters, digits, "
                "'_.-', starting with a letter"
            )
        if pivot and kind not in (None, StepKind.PIVOT):
            raise SagaDefinitionError(
                f"saga {self.name!r}: step {name!r} says pivot=True and kind={kind.value!r}"
            )
        wanted = StepKind.PIVOT if pivot else kind
        self._check_new_step(name, wanted)
        if timeout is not None and timeout <= timedelta(0):
            raise SagaDefinitionError(f"saga {self.name!r}: step {name!r} timeout must be positive")
        policy = self._step_policy(name, retry, non_retryable)

        def register(action: A) -> StepHandle[A]:
            if not _is_async(action):
                raise SagaDefinitionError(
                    f"saga {self.name!r}: step {name!r} must be an async function"
                )
            # Checked again here: a decorator may be created early or applied twice.
            step_kind = self._check_new_step(name, wanted)
            index = len(self._steps)
            if step_kind is StepKind.PIVOT:
                self._pivot = index
                self._forward_from = index + 1
            elif step_kind is StepKind.RETRIABLE and self._forward_from is None:
                self._forward_from = index
            self._steps.append(
                Step(
                    name=name,
                    index=index,
                    action=action,
                    kind=step_kind,
                    transactional=transactional,
                    retry=policy,
                    timeout=timeout,
                    non_retryable=tuple(non_retryable),
                )
            )
            return StepHandle(self, name, action)

        return register

    def _step_policy(
        self,
        name: str,
        retry: RetryPolicy | None,
        non_retryable: tuple[type[BaseException], ...],
    ) -> RetryPolicy | None:
        if not non_retryable:
            return retry
        base = retry if retry is not None else self.retry
        try:
            return replace(base, non_retryable=(*base.non_retryable, *non_retryable))
        except ValueError as error:
            raise SagaDefinitionError(f"saga {self.name!r}: step {name!r}: {error}") from None

    def _check_new_step(self, name: str, kind: StepKind | None) -> StepKind:
        """The kind the next step gets; raises SagaDefinitionError if it breaks the order."""
        if any(s.name == name for s in self._steps):
            raise SagaDefinitionError(f"saga {self.name!r}: duplicate step name {name!r}")
        if kind is None:
            return StepKind.COMPENSATABLE if self._forward_from is None else StepKind.RETRIABLE
        if kind is StepKind.PIVOT and self._pivot is not None:
            raise SagaDefinitionError(
                f"saga {self.name!r}: step {name!r} cannot be a pivot, "
                f"{self._steps[self._pivot].name!r} already is (a saga has at most one pivot)"
            )
        last = self._steps[-1] if self._steps else None
        if last is not None and _KIND_ORDER[kind] < _KIND_ORDER[last.kind]:
            raise SagaDefinitionError(
                f"saga {self.name!r}: {kind.value} step {name!r} cannot follow {last.kind.value} "
                f"step {last.name!r}; kinds go compensatable, then the pivot, then retriable"
            )
        return kind

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


def _adapter(saga: str, input_type: type[InputT]) -> TypeAdapter[InputT]:
    model = isinstance(input_type, type) and issubclass(input_type, BaseModel)
    if not (model or dataclasses.is_dataclass(input_type)):
        raise SagaDefinitionError(
            f"saga {saga!r}: input must be a pydantic model or a dataclass, got {input_type!r}"
        )
    try:
        return adapter(input_type)
    except Exception as error:  # pydantic cannot build a schema for one of its fields
        raise SagaDefinitionError(f"saga {saga!r}: input {input_type!r}: {error}") from None
