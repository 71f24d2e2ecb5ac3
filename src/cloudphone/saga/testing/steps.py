"""StepEnvironment: the context of one step, to unit-test a step function without an engine."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.context import StepContext, WriteQueue, idempotency_key
from cloudphone.saga.definition import Saga, Step
from cloudphone.saga.errors import QueuedWriteError
from cloudphone.saga.inputs import input_json
from cloudphone.saga.outputs import RunView, check_collision, check_output, is_legacy, merged_data
from cloudphone.saga.records import ErrorInfo
from cloudphone.saga.store.database import Database
from cloudphone.saga.store.writes import run_writes


class StepEnvironment:
    """Builds the :class:`~cloudphone.saga.StepContext` a step gets in a run.

    Call a step function with :meth:`context`, or let :meth:`run` call a step of ``saga`` as
    the engine would: in a transaction of ``database`` when it is transactional (committed when
    it returns, with the writes it queued with ``ctx.write``; rolled back when it raises), its
    output checked (JSON, no key of the input's or another step's) and kept under the step in
    :attr:`outputs`, so the next step sees it as ``ctx.output(step)`` and in ``ctx.data``. No
    retries, timeouts or deadlines: that is the engine's part (see
    :class:`~cloudphone.saga.testing.MemoryEngine`).

    Example::

        env = StepEnvironment(refund_saga, RefundInput(refund_id=refund_id), database=db)
        await env.run("SET_REFUNDING_STATUS")
        await env.run("SET_REFUNDING_STATUS", compensating=True)
        ctx = env.context("CALL_PROVIDER_REFUND", attempt=2)
        assert ctx.idempotency_key == f"{env.saga_id}:CALL_PROVIDER_REFUND"

    Args:
        saga: The saga whose steps :meth:`run` calls (optional for :meth:`context`).
        data: The saga input: an instance of the saga's input type or a JSON object (validated
            as ``start()`` would when the saga has an input type).
        outputs: Earlier steps' outputs by step name, as if they had run.
        saga_id: Run id (a fresh UUID by default); idempotency keys derive from it.
        saga_type: Saga name (default: ``saga``'s, else ``test_saga``).
        deadline: What ``ctx.deadline`` says.
        database: Where :meth:`run` opens a transactional step's transaction.
    """

    def __init__(
        self,
        saga: Saga[Any] | None = None,
        data: object = None,
        *,
        outputs: Mapping[str, Mapping[str, Any] | None] | None = None,
        saga_id: str | None = None,
        saga_type: str | None = None,
        deadline: datetime | None = None,
        database: Database | None = None,
    ) -> None:
        self.saga = saga
        self.saga_id = saga_id or str(uuid.uuid4())
        self.saga_type = saga_type or (saga.name if saga is not None else "test_saga")
        self.input: dict[str, Any] = _copy(_stored_input(saga, {} if data is None else data))
        """The saga input, as stored (JSON)."""
        self.outputs: dict[str, Any] = _copy(dict(outputs or {}))
        """Each step's output by step name; :meth:`run` records the steps it runs."""
        self.deadline = deadline
        self.database = database

    @property
    def data(self) -> dict[str, Any]:
        """The merged view a step sees as ``ctx.data``: the input, then each output."""
        return merged_data(self.input, self.outputs, self._order())

    def _order(self, step: str | None = None) -> tuple[str, ...]:
        if self.saga is not None:
            return tuple(s.name for s in self.saga.steps)
        names = [*self.outputs, *([step] if step is not None else [])]
        return tuple(dict.fromkeys(names))

    def context(
        self,
        step: str,
        *,
        attempt: int = 1,
        compensating: bool = False,
        compensation_cause: str | None = None,
        error: ErrorInfo | None = None,
        session: AsyncConnection | None = None,
    ) -> StepContext[Any]:
        """The context of one attempt of ``step`` (or of its compensation).

        Args:
            step: Step name.
            attempt: Attempt number, from 1.
            compensating: A compensation's context.
            compensation_cause: Why the saga turned back (``failed`` by default when
                compensating, as the engine says; ignored otherwise).
            error: What ``ctx.error`` says (the failure that made the saga turn back).
            session: What ``ctx.session`` gives (a connection in an open transaction). Its
                ``ctx.write`` refuses: queued writes run only through :meth:`run`.
        """
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        order = self._order(step)
        current = order.index(step) if step in order else len(order)
        kind = self.saga.input_type if self.saga is not None else None
        view = RunView(_copy(self.input), _copy(self.outputs), order, current, kind)
        return StepContext(
            saga_id=self.saga_id,
            saga_type=self.saga_type,
            step=step,
            attempt=attempt,
            data=MappingProxyType(merged_data(view.input_data, view.outputs, order)),
            idempotency_key=idempotency_key(self.saga_id, step, compensating=compensating),
            deadline=self.deadline,
            compensating=compensating,
            compensation_cause=(compensation_cause or "failed") if compensating else None,
            error=error,
            _session=session,
            _run=view,
        )

    async def run(
        self,
        step: str,
        *,
        attempt: int = 1,
        compensating: bool = False,
        compensation_cause: str | None = None,
        error: ErrorInfo | None = None,
    ) -> Mapping[str, Any] | None:
        """Call ``saga``'s step (or its compensation) once; returns the checked output.

        Raises:
            ValueError: No saga, no such step, or it has no compensation to run.
            RuntimeError: The step is transactional and there is no ``database``.
            StepOutputError: The step returned something that is not a JSON object, or a key
                the input or another step's output has.
        """
        if self.saga is None:
            raise ValueError("run() needs the saga: StepEnvironment(saga, data, ...)")
        try:
            definition = self.saga.step_named(step)
        except KeyError as missing:
            raise ValueError(str(missing)) from None
        fn = definition.compensation if compensating else definition.action
        if fn is None:
            raise ValueError(f"step {step!r} of saga {self.saga.name!r} has no compensation")
        transactional = (
            definition.compensation_transactional if compensating else definition.transactional
        )
        options: dict[str, Any] = {
            "attempt": attempt,
            "compensating": compensating,
            "compensation_cause": compensation_cause,
            "error": error,
        }
        if not transactional:
            output = await fn(self.context(step, **options))
            checked = None if compensating else self._check(definition, output)
        else:
            if self.database is None:
                raise RuntimeError(
                    f"step {step!r} is transactional: give StepEnvironment a database="
                )
            async with self.database.begin() as conn:
                ctx = self.context(step, session=conn, **options)
                writes = WriteQueue()
                output = await fn(replace(ctx, _writes=writes))
                checked = None if compensating else self._check(definition, output)
                try:
                    await run_writes(conn, writes.take())
                except QueuedWriteError as failed:
                    raise failed.error from None
        if not compensating:
            self.outputs[step] = _copy(dict(checked)) if checked is not None else None
        return checked

    def _check(self, step: Step, output: object) -> Mapping[str, Any] | None:
        checked = check_output(step, output)
        order = self._order()

        def legacy() -> bool:
            return is_legacy(self.outputs, order, step.index)

        check_collision(step.name, checked, self.input, self.outputs, legacy)
        return checked


def _stored_input(saga: Saga[Any] | None, data: object) -> dict[str, Any]:
    if saga is not None:
        return input_json(saga, data)
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a dict without a saga, got {type(data).__name__}")
    return dict(data)


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    """A private JSON copy, as the engine gives each attempt."""
    copied: dict[str, Any] = json.loads(json.dumps(data, allow_nan=False))
    return copied
