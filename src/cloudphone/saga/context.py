"""What a step sees while it runs."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar, cast, overload

from sqlalchemy.ext.asyncio import AsyncConnection
from typing_extensions import TypeVar as DefaultTypeVar

from cloudphone.saga.errors import MissingOutputError
from cloudphone.saga.outputs import RunView
from cloudphone.saga.records import ErrorInfo

InputT = DefaultTypeVar("InputT", default=Any)
T = TypeVar("T")


@dataclass(frozen=True)
class StepContext(Generic[InputT]):
    """The view a step action or compensation has of its saga run.

    Annotate it with the saga's input type (``ctx: StepContext[RefundInput]``) to have
    ``ctx.input`` typed.

    Attributes:
        saga_id: Id of the run.
        saga_type: Name of the saga definition.
        step: Name of the step being run (or compensated).
        attempt: Attempt number of this step, 1-based; counts attempts lost to crashes too.
        data: Read-only merged view of the saga data: the input, then each earlier step's
            output in step order (see :attr:`input` and :meth:`output` for the parts).
        idempotency_key: Stable across attempts, workers and restarts of this step; pass it to
            the outside system so a repeated call is harmless.
        deadline: When the saga's deadline passes (None when it has none).
        compensating: True when this call is a compensation.
        compensation_cause: Why the saga turned back (``failed``, ``timed_out``,
            ``cancelled``); None in forward steps.
        error: The failure that made it turn back (or the last failure of this step), if any.
    """

    saga_id: str
    saga_type: str
    step: str
    attempt: int
    data: Mapping[str, Any]
    idempotency_key: str
    deadline: datetime | None
    compensating: bool = False
    compensation_cause: str | None = None
    error: ErrorInfo | None = None
    _session: AsyncConnection | None = field(default=None, repr=False)
    _run: RunView | None = field(default=None, repr=False, compare=False)

    @property
    def input(self) -> InputT:
        """The saga input: the saga's input type (parsed once, on first use), else a dict.

        Raises:
            NonRetryableError: The stored input no longer fits the saga's input type.
        """
        if self._run is None:
            return cast(InputT, dict(self.data))
        return cast(InputT, self._run.input())

    @overload
    def output(self, step: str, type: None = None) -> dict[str, Any]: ...

    @overload
    def output(self, step: str, type: type[T]) -> T: ...

    def output(self, step: str, type: type[T] | None = None) -> dict[str, Any] | T:
        """What ``step`` returned (a private copy), validated into ``type`` if given.

        Raises:
            MissingOutputError: The saga has no such step, it has not run yet, or it returned
                nothing.
            StepOutputError: Its output does not fit ``type``.
        """
        if self._run is None:
            raise MissingOutputError(
                f"this context of step {self.step!r} was built without the run's outputs"
            )
        return self._run.output(step, type)

    @property
    def session(self) -> AsyncConnection:
        """The database connection of this step's transaction (transactional steps only).

        Its writes commit in the same transaction as the engine's record of the step, so they
        happen exactly once. Do not commit or roll it back yourself.
        """
        if self._session is None:
            raise RuntimeError(
                f"step {self.step!r} of saga {self.saga_type!r} is not transactional; "
                "declare it with transactional=True to get ctx.session"
            )
        return self._session


def idempotency_key(saga_id: str, step: str, *, compensating: bool = False) -> str:
    """The stable idempotency key of a step (or its compensation) in a run."""
    return f"{saga_id}:{step}:undo" if compensating else f"{saga_id}:{step}"


_CURRENT: ContextVar[StepContext | None] = ContextVar("cloudphone_saga_step", default=None)
"""The attempt running in this task (tasks it creates inherit it); set by the runner."""


def current_step() -> StepContext | None:
    """The context of the step attempt (or compensation) running now, or None outside one.

    Set by the engine while an attempt's action (and the hook before it) runs; tasks the step
    creates see it too. Logging uses it to tag every line a step emits (see ``cloudphone.logs``).
    """
    return _CURRENT.get()
