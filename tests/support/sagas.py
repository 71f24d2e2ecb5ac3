"""Saga definitions for engine tests: every step and compensation records its call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cloudphone.saga import RetryPolicy, Saga, SagaEngine, StepContext
from cloudphone.saga.store.base import NewRun

FAST = RetryPolicy(
    max_attempts=3,
    initial_interval=timedelta(milliseconds=10),
    max_interval=timedelta(milliseconds=40),
    jitter=False,
)
"""Retries in milliseconds so tests finish fast; no jitter so delays are predictable."""


@dataclass
class Recorder:
    """Calls seen by the steps of a test saga, in order (``A``, ``undo:A``, …)."""

    calls: list[str] = field(default_factory=list)

    def forward(self) -> list[str]:
        """Forward step calls only."""
        return [c for c in self.calls if not c.startswith("undo:")]

    def undone(self) -> list[str]:
        """Compensated steps, in the order they were undone."""
        return [c.removeprefix("undo:") for c in self.calls if c.startswith("undo:")]


def build_saga(
    name: str,
    recorder: Recorder,
    steps: Sequence[str] = ("A", "B", "C"),
    *,
    pivot: str | None = None,
    transactional: Sequence[str] = (),
    compensated: Sequence[str] | None = None,
    timeout: timedelta | None = None,
    retry: RetryPolicy = FAST,
    step_timeout: dict[str, timedelta] | None = None,
    version: int = 1,
) -> Saga:
    """A saga whose steps return ``{step: attempt}`` and record their calls.

    Args:
        name: Saga name (make it unique per test).
        recorder: Receives every call.
        steps: Step names in order.
        pivot: Name of the pivot step, if any.
        transactional: Steps declared transactional.
        compensated: Steps with a compensation (default: every step before the pivot).
        timeout: Saga deadline.
        retry: Default retry policy.
        step_timeout: Per-attempt timeouts by step name.
        version: The definition's version.
    """
    saga = Saga(name, version=version, timeout=timeout, retry=retry)
    pivot_index = list(steps).index(pivot) if pivot else len(steps)
    with_comp = set(compensated) if compensated is not None else set(steps[: pivot_index + 1])
    for step_name in steps:
        handle = saga.step(
            step_name,
            pivot=step_name == pivot,
            transactional=step_name in transactional,
            timeout=(step_timeout or {}).get(step_name),
        )(_action(step_name, recorder))
        if step_name in with_comp:
            handle.compensate(_compensation(step_name, recorder))
    return saga


def _action(step_name: str, recorder: Recorder) -> Any:
    async def action(ctx: StepContext) -> dict[str, Any]:
        recorder.calls.append(step_name)
        return {step_name: ctx.attempt}

    return action


def _compensation(step_name: str, recorder: Recorder) -> Any:
    async def compensation(ctx: StepContext) -> None:
        recorder.calls.append(f"undo:{step_name}")

    return compensation


def build_versioned(
    name: str,
    version: int,
    steps: Sequence[str],
    *,
    pivot: str | None = None,
    calls: list[str] | None = None,
    retry: RetryPolicy = FAST,
) -> Saga:
    """Version ``version`` of saga ``name``: which version ran each step shows everywhere.

    Each step records ``v<version>:<step>`` in ``calls`` (if given), sleeps ``work_ms`` of the
    saga data (so runs are in flight long enough to stop a worker under them) and returns
    ``{step: "v<version>", "key:<step>": ctx.idempotency_key}``. Steps before the pivot (all,
    without one) have a compensation recording ``undo:v<version>:<step>``.
    """
    saga = Saga(name, version=version, retry=retry)
    before_pivot = True
    for step_name in steps:
        handle = saga.step(step_name, pivot=step_name == pivot)(
            _versioned_action(version, step_name, calls)
        )
        if before_pivot:
            handle.compensate(_versioned_undo(version, step_name, calls))
        before_pivot = before_pivot and step_name != pivot
    return saga


def _versioned_action(version: int, step_name: str, calls: list[str] | None) -> Any:
    async def action(ctx: StepContext) -> dict[str, Any]:
        if calls is not None:
            calls.append(f"v{version}:{step_name}")
        work_ms = ctx.data.get("work_ms", 0)
        if work_ms:
            await asyncio.sleep(work_ms / 1000)
        return {step_name: f"v{version}", f"key:{step_name}": ctx.idempotency_key}

    return action


def _versioned_undo(version: int, step_name: str, calls: list[str] | None) -> Any:
    async def compensation(ctx: StepContext) -> None:
        if calls is not None:
            calls.append(f"undo:v{version}:{step_name}")

    return compensation


async def insert_pinned(
    engine: SagaEngine, saga_type: str, first_step: str, version: int, started_by: str | None
) -> str:
    """Insert a run pinned to ``version`` (e.g. one no worker has: a deploy that has gone)."""
    new = NewRun(
        id=str(uuid.uuid4()),
        saga_type=saga_type,
        data={},
        first_step=first_step,
        idempotency_key=None,
        started_by=started_by,
        deadline_at=None,
        now=engine.clock.now(),
        saga_version=version,
    )
    run_id, _ = await engine.store.insert_run(new)
    return run_id
