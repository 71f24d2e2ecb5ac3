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
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudphone.saga import NonRetryableError, RetryPolicy, Saga, StepContext

DEMO_SAGA = "demo"
"""Name of the demo saga type."""

STEPS = ("PREPARE", "COMMIT", "NOTIFY")
"""The demo saga's steps, in order; ``COMMIT`` is the pivot."""


class DemoFault(NonRetryableError):
    """The failure a demo step was asked to raise (skips the remaining attempts)."""


def build_demo_saga(*, timeout: timedelta = timedelta(minutes=5)) -> Saga:
    """The demo saga definition.

    Its input (see ``cloudphone.api.demo.DemoRequest``) may hold ``work_ms`` (time each step
    takes), ``fail_step`` and ``fail_until`` (ISO time; the step fails non-retryably until
    then, so an operator retry after it succeeds).

    Args:
        timeout: Deadline of each run.
    """
    saga = Saga(DEMO_SAGA, timeout=timeout, retry=RetryPolicy(max_attempts=3, jitter=True))

    @saga.step("PREPARE", timeout=timedelta(seconds=60))
    async def prepare(ctx: StepContext) -> dict[str, Any]:
        await _act(ctx)
        return {"prepared_at": _now(), "prepared_by": _process()}

    @prepare.compensate
    async def unprepare(ctx: StepContext) -> None:
        """Nothing outside to undo; the event in the history is the demonstration."""

    @saga.step("COMMIT", pivot=True, timeout=timedelta(seconds=60))
    async def commit(ctx: StepContext) -> dict[str, Any]:
        await _act(ctx)
        return {"committed_at": _now(), "committed_by": _process()}

    @saga.step("NOTIFY", timeout=timedelta(seconds=60))
    async def notify(ctx: StepContext) -> dict[str, Any]:
        await _act(ctx)
        return {"notified_at": _now(), "notified_by": _process()}

    return saga


async def _act(ctx: StepContext) -> None:
    work_ms = ctx.data.get("work_ms", 0)
    if work_ms:
        await asyncio.sleep(work_ms / 1000)
    if ctx.data.get("fail_step") == ctx.step:
        until = ctx.data.get("fail_until")
        if until is None or datetime.fromisoformat(until) > datetime.now(UTC):
            raise DemoFault(f"{ctx.step} was asked to fail (fail_until={until})")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _process() -> str:
    """Which process ran the step (shows the work spreading over workers)."""
    return f"{socket.gethostname()}-{os.getpid()}"
