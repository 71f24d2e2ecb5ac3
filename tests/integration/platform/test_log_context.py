"""Log context: every line emitted while a step runs names the run, step and attempt.

Whatever logger emits it (the step's own included), in JSON and on the console.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from cloudphone.logs import configure_logging
from cloudphone.saga import NonRetryableError, Saga, SagaEngine, SagaStatus, StepContext
from tests.support.sagas import FAST

RUN_FIELDS = ("saga_id", "saga_type", "step", "attempt")


@pytest.fixture
def configured() -> Iterator[Callable[[str], io.StringIO]]:
    """``configure_logging`` onto a buffer (JSON or console); undone after the test."""
    root = logging.getLogger()
    level = root.level

    def configure(fmt: str) -> io.StringIO:
        stream = io.StringIO()
        configure_logging("info", fmt, stream)  # type: ignore[arg-type]
        return stream

    yield configure
    root.setLevel(level)
    for handler in list(root.handlers):
        if handler.get_name() == "cloudphone":
            root.removeHandler(handler)


def _user_saga(name: str, logger: logging.Logger) -> Saga:
    """CHARGE logs, fails once, then succeeds; SHIP logs from a task and fails for good."""
    saga = Saga(name, retry=FAST)

    @saga.step("CHARGE")
    async def charge(ctx: StepContext) -> None:
        logger.info("charging")
        if ctx.attempt == 1:
            raise ConnectionError("try again")

    @charge.compensate
    async def refund(ctx: StepContext) -> None:
        logger.warning("refunding")

    @saga.step("SHIP")
    async def ship(ctx: StepContext) -> None:
        async def side_task() -> None:
            logger.info("from a task the step created")

        await asyncio.create_task(side_task())
        raise NonRetryableError("no address")

    return saga


async def _run(engine: SagaEngine, saga: Saga) -> str:
    await engine.create_schema()
    async with engine.worker(concurrency=2):
        saga_id = await engine.start(saga.name, {})
        run = await engine.wait(saga_id, timeout=timedelta(seconds=10))
    assert run.status is SagaStatus.COMPENSATED
    return saga_id


async def test_json_lines_of_user_code_carry_the_run_step_and_attempt(
    make_engine: Callable[..., SagaEngine], unique: str, configured: Any
) -> None:
    """The step's own logger, a task it spawned and its compensation: all tagged."""
    stream = configured("json")
    logger = logging.getLogger(f"shop.{unique}")
    saga = _user_saga(f"logged_{unique}", logger)
    saga_id = await _run(make_engine([saga]), saga)
    logger.info("after the run")

    mine = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [entry for entry in mine if entry["logger"] == logger.name]
    assert [
        (e["message"], e.get("saga_id"), e.get("saga_type"), e.get("step"), e.get("attempt"))
        for e in mine
    ] == [
        ("charging", saga_id, saga.name, "CHARGE", 1),
        ("charging", saga_id, saga.name, "CHARGE", 2),
        ("from a task the step created", saga_id, saga.name, "SHIP", 1),
        ("refunding", saga_id, saga.name, "CHARGE", 1),
        ("after the run", None, None, None, None),
    ]
    assert list(mine[0])[4:8] == list(RUN_FIELDS)


async def test_console_lines_of_user_code_carry_the_same_fields(
    make_engine: Callable[..., SagaEngine],
    unique: str,
    configured: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Humans see saga_id=… saga_type=… step=… attempt=… after the message."""
    monkeypatch.setenv("COLUMNS", "400")  # Rich wraps at 80 columns off a terminal
    stream = configured("console")
    logger = logging.getLogger(f"shop.{unique}")
    saga = _user_saga(f"console_{unique}", logger)
    saga_id = await _run(make_engine([saga]), saga)

    lines = [line for line in stream.getvalue().splitlines() if "charging" in line]
    expected = f"saga_id={saga_id} saga_type={saga.name} step=CHARGE attempt="
    assert len(lines) == 2
    assert all(expected in line for line in lines), lines


async def test_engine_lines_keep_the_fields_they_were_given(
    make_engine: Callable[..., SagaEngine], unique: str, configured: Any
) -> None:
    """The engine's own 'attempt failed' line is not overwritten by the filter."""
    stream = configured("json")
    saga = _user_saga(f"engine_{unique}", logging.getLogger(f"shop.{unique}"))
    saga_id = await _run(make_engine([saga]), saga)
    failed = [
        json.loads(line)
        for line in stream.getvalue().splitlines()
        if '"attempt failed' in line and saga_id in line
    ]
    assert [(e["step"], e["attempt"], e["saga_type"]) for e in failed] == [
        ("CHARGE", 1, saga.name),
        ("SHIP", 1, saga.name),
    ]
