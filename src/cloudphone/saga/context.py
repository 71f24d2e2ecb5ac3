"""What a step sees while it runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar, cast, overload

from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable
from typing_extensions import TypeVar as DefaultTypeVar

from cloudphone.saga.errors import MissingOutputError
from cloudphone.saga.outputs import RunView
from cloudphone.saga.records import ErrorInfo

InputT = DefaultTypeVar("InputT", default=Any)
T = TypeVar("T")

WriteParams = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
"""A queued write's parameters: one set, a list of sets (executemany), or none."""


@dataclass(frozen=True)
class QueuedWrite:
    """A statement a transactional step queued with :meth:`StepContext.write`."""

    statement: Executable
    params: dict[str, Any] | list[dict[str, Any]] | None = field(default=None, repr=False)
    """A private copy of what the step gave (never logged: it may hold secrets)."""


class WriteQueue:
    """The writes one attempt queued with :meth:`StepContext.write`, until they are taken.

    Taken once the body returned; a write queued after that (from a task the body left
    running, say) would never run, so it is refused instead of dropped.
    """

    def __init__(self) -> None:
        self._items: list[QueuedWrite] = []
        self._taken = False

    def add(self, write: QueuedWrite) -> None:
        """Queue ``write`` (refused once the writes were taken)."""
        if self._taken:
            raise RuntimeError(
                "ctx.write after the step's body returned: its writes were already taken "
                "to commit with the step; queue them before the body returns"
            )
        self._items.append(write)

    def take(self) -> tuple[QueuedWrite, ...]:
        """The queued writes, in order; later ones are refused."""
        self._taken = True
        return tuple(self._items)


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
    _writes: WriteQueue | None = field(default=None, repr=False, compare=False)
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
            raise self._not_transactional("ctx.session")
        return self._session

    def write(self, statement: Executable, params: WriteParams = None) -> None:
        """Queue a business write to run when this attempt's body has returned.

        For writes whose result the step does not need (transactional steps and
        compensations only). The statements run in order, after the statements sent on
        :attr:`session` during the body, in the step's transaction, with the engine's record
        of the step: they commit if and only if that record does (exactly once, like
        ``ctx.session``). None runs if the body raises, and their results are not returned.
        A queued statement that fails fails the attempt, as if the body had raised its error
        (retry policy, ``step_failed`` event), with nothing of it committed; that error
        carries neither the statement nor its parameters.

        On PostgreSQL (asyncpg) a step that sent nothing else and queued one INSERT, UPDATE
        or DELETE has it sent in the same statement as its record: one round trip.

        Args:
            statement: An INSERT, UPDATE or DELETE (``sqlalchemy.insert(table).values(...)``,
                ``text("INSERT ...")``); any executable statement is accepted.
            params: Its parameters: a mapping, or a list of mappings (executemany).

        Raises:
            RuntimeError: The step is not transactional.
            TypeError: ``statement`` is not an executable statement, or ``params`` is
                neither a mapping nor a list of mappings.
        """
        if self._session is None:
            raise self._not_transactional("ctx.write")
        if self._writes is None:
            raise RuntimeError(
                "this context runs no queued writes (StepEnvironment.context): call the step "
                "through StepEnvironment.run, or write through ctx.session"
            )
        self._writes.add(QueuedWrite(statement, _copied(statement, params)))

    def _not_transactional(self, what: str) -> RuntimeError:
        return RuntimeError(
            f"step {self.step!r} of saga {self.saga_type!r} is not transactional; "
            f"declare it with transactional=True to get {what}"
        )


def _copied(statement: object, params: WriteParams) -> dict[str, Any] | list[dict[str, Any]] | None:
    """A private copy of a write's parameters, checked with its statement."""
    if not isinstance(statement, Executable):
        raise TypeError(f"ctx.write takes a SQLAlchemy statement, not {type(statement).__name__}")
    if params is None:
        return None
    if isinstance(params, Mapping):
        return dict(params)
    if isinstance(params, list | tuple) and all(isinstance(p, Mapping) for p in params):
        return [dict(p) for p in params]
    raise TypeError(
        f"ctx.write's params must be a mapping or a list of mappings, not {type(params).__name__}"
    )


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
