"""A tiny saga with fault knobs, so a fresh ``cloudphone serve`` has something to run.

``demo``: ``PREPARE`` (compensatable) → ``COMMIT`` (pivot) → ``NOTIFY`` (retriable). It touches
no outside system; its input can make a step slow or fail, which shows the three outcomes an
operator meets: COMPLETED, COMPENSATED (failure before the pivot) and FAILED (failure after the
pivot, waiting for ``retry`` or ``resolve``).
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import AwareDatetime

from cloudphone.saga import NonRetryableError, RetryPolicy, Saga, StepContext, StepKind

DEMO_SAGA = "demo"
"""Name of the demo saga type."""

STEPS = ("PREPARE", "COMMIT", "NOTIFY")
"""The demo saga's steps, in order; ``COMMIT`` is the pivot."""


class DemoFault(NonRetryableError):
    """The failure a demo step was asked to raise (skips the remaining attempts)."""


@dataclass(frozen=True)
class DemoInput:
    """The demo saga's input (the API validates it first: ``cloudphone.api.demo``)."""

    message: str = "hello"
    """Carried along, nothing more."""
    work_ms: int = 0
    """Time each step takes."""
    fail_step: str | None = None
    """This step fails non-retryably..."""
    fail_until: AwareDatetime | None = None
    """...until then (always when None), so an operator retry after it succeeds."""


def build_demo_saga(*, timeout: timedelta = timedelta(minutes=5)) -> Saga[DemoInput]:
    """The demo saga definition (input :class:`DemoInput`).

    Args:
        timeout: Deadline of each run.
    """
    saga = Saga(
        DEMO_SAGA,
        input=DemoInput,
        timeout=timeout,
        retry=RetryPolicy(max_attempts=3, jitter=True),
    )

    @saga.step("PREPARE", timeout=timedelta(seconds=60))
    async def prepare(ctx: StepContext[DemoInput]) -> dict[str, Any]:
        await _act(ctx)
        return {"prepared_at": _now(), "prepared_by": _process()}

    @prepare.compensate
    async def unprepare(ctx: StepContext[DemoInput]) -> None:
        """Nothing outside to undo; the event in the history is the demonstration."""

    @saga.step("COMMIT", kind=StepKind.PIVOT, timeout=timedelta(seconds=60))
    async def commit(ctx: StepContext[DemoInput]) -> dict[str, Any]:
        await _act(ctx)
        return {"committed_at": _now(), "committed_by": _process()}

    @saga.step("NOTIFY", timeout=timedelta(seconds=60))
    async def notify(ctx: StepContext[DemoInput]) -> dict[str, Any]:
        await _act(ctx)
        return {"notified_at": _now(), "notified_by": _process()}

    return saga


async def _act(ctx: StepContext[DemoInput]) -> None:
    demo = ctx.input
    if demo.work_ms:
        await asyncio.sleep(demo.work_ms / 1000)
    if demo.fail_step == ctx.step:
        until = demo.fail_until
        if until is None or until > datetime.now(UTC):
            shown = until.isoformat() if until is not None else None
            raise DemoFault(f"{ctx.step} was asked to fail (fail_until={shown})")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _process() -> str:
    """Which process ran the step (shows the work spreading over workers)."""
    return f"{socket.gethostname()}-{os.getpid()}"
