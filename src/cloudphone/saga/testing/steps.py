"""StepEnvironment: the context of one step, to unit-test a step function without an engine."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.context import StepContext, idempotency_key
from cloudphone.saga.definition import Saga
from cloudphone.saga.records import ErrorInfo
from cloudphone.saga.runner import _check_output as check_output
from cloudphone.saga.store.database import Database


class StepEnvironment:
    """Builds the :class:`~cloudphone.saga.StepContext` a step gets in a run.

    Call a step function with :meth:`context`, or let :meth:`run` call a step of ``saga`` as
    the engine would: in a transaction of ``database`` when it is transactional (committed when
    it returns, rolled back when it raises), its output checked and merged into :attr:`data`
    so the next step sees it. No retries, timeouts or deadlines: that is the engine's part
    (see :class:`~cloudphone.saga.testing.MemoryEngine`).

    Example::

        env = StepEnvironment(refund_saga, {"refund_id": refund_id}, database=db)
        await env.run("SET_REFUNDING_STATUS")
        await env.run("SET_REFUNDING_STATUS", compensating=True)
        ctx = env.context("CALL_PROVIDER_REFUND", attempt=2)
        assert ctx.idempotency_key == f"{env.saga_id}:CALL_PROVIDER_REFUND"

    Args:
        saga: The saga whose steps :meth:`run` calls (optional for :meth:`context`).
        data: The saga data so far (input plus earlier outputs); JSON.
        saga_id: Run id (a fresh UUID by default); idempotency keys derive from it.
        saga_type: Saga name (default: ``saga``'s, else ``test_saga``).
        deadline: What ``ctx.deadline`` says.
        database: Where :meth:`run` opens a transactional step's transaction.
    """

    def __init__(
        self,
        saga: Saga | None = None,
        data: Mapping[str, Any] | None = None,
        *,
        saga_id: str | None = None,
        saga_type: str | None = None,
        deadline: datetime | None = None,
        database: Database | None = None,
    ) -> None:
        self.saga = saga
        self.saga_id = saga_id or str(uuid.uuid4())
        self.saga_type = saga_type or (saga.name if saga is not None else "test_saga")
        self.data: dict[str, Any] = _copy(dict(data or {}))
        """The saga data; :meth:`run` merges each step's output into it."""
        self.deadline = deadline
        self.database = database

    def context(
        self,
        step: str,
        *,
        attempt: int = 1,
        compensating: bool = False,
        compensation_cause: str | None = None,
        error: ErrorInfo | None = None,
        session: AsyncConnection | None = None,
    ) -> StepContext:
        """The context of one attempt of ``step`` (or of its compensation).

        Args:
            step: Step name.
            attempt: Attempt number, from 1.
            compensating: A compensation's context.
            compensation_cause: Why the saga turned back (``failed`` by default when
                compensating, as the engine says; ignored otherwise).
            error: What ``ctx.error`` says (the failure that made the saga turn back).
            session: What ``ctx.session`` gives (a connection in an open transaction).
        """
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        return StepContext(
            saga_id=self.saga_id,
            saga_type=self.saga_type,
            step=step,
            attempt=attempt,
            data=MappingProxyType(_copy(self.data)),
            idempotency_key=idempotency_key(self.saga_id, step, compensating=compensating),
            deadline=self.deadline,
            compensating=compensating,
            compensation_cause=(compensation_cause or "failed") if compensating else None,
            error=error,
            _session=session,
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
            StepOutputError: The step returned something that is not a JSON object.
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
            checked = None if compensating else check_output(definition, output)
        else:
            if self.database is None:
                raise RuntimeError(
                    f"step {step!r} is transactional: give StepEnvironment a database="
                )
            async with self.database.begin() as conn:
                output = await fn(self.context(step, session=conn, **options))
                checked = None if compensating else check_output(definition, output)
        if checked:
            self.data.update(_copy(dict(checked)))
        return checked


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    """A private JSON copy, as the engine gives each attempt."""
    copied: dict[str, Any] = json.loads(json.dumps(data, allow_nan=False))
    return copied
