"""``cloudphone demo``: start demo sagas and watch them finish (a quick end-to-end check)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloudphone.cli._shared import err, fail, load, out, run

if TYPE_CHECKING:
    from cloudphone.settings import Settings


def demo(
    count: Annotated[int, typer.Option(min=1, max=100_000, help="Sagas to start.")] = 20,
    work_ms: Annotated[int, typer.Option(min=0, max=30_000, help="Time each step takes.")] = 50,
    fail_step: Annotated[
        str | None, typer.Option(help="Make this step fail: PREPARE, COMMIT or NOTIFY.")
    ] = None,
    worker: Annotated[
        bool,
        typer.Option("--worker/--no-worker", help="Drive them here, or leave it to workers."),
    ] = True,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for them.")] = 120,
) -> None:
    """Start COUNT demo sagas and show their progress until each has finished."""
    settings = load()
    if not settings.demo:
        fail("the demo saga is disabled (CLOUDPHONE_DEMO=false)")
    if fail_step not in (None, "PREPARE", "COMMIT", "NOTIFY"):
        fail(f"--fail-step {fail_step!r}: use PREPARE, COMMIT or NOTIFY", 2)
    data: dict[str, Any] = {"message": "cloudphone demo", "work_ms": work_ms}
    if fail_step:
        data["fail_step"] = fail_step
    tally = run(lambda: _run(settings, data, count, worker, timeout))
    table = Table(title=f"{count} demo sagas", title_justify="left")
    table.add_column("status")
    table.add_column("runs", justify="right")
    for status, n in sorted(tally.items()):
        table.add_row(status, str(n))
    out().print(table)


async def _run(
    settings: Settings, data: dict[str, Any], count: int, worker: bool, wait_s: float
) -> Counter[str]:

    from cloudphone.demo import DEMO_SAGA
    from cloudphone.platform import build_platform

    platform = build_platform(settings, with_worker=worker)
    tally: Counter[str] = Counter()
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    async with platform:
        engine = platform.engine
        with Progress(*columns, console=err()) as progress:
            starting = progress.add_task("starting", total=count)
            ids = []
            for _ in range(count):
                ids.append(await engine.start(DEMO_SAGA, data, started_by="cli-demo"))
                progress.advance(starting)
            finishing = progress.add_task("finishing", total=count)
            for waiting in asyncio.as_completed(
                [engine.wait(i, timedelta(seconds=wait_s)) for i in ids]
            ):
                run_ = await waiting
                tally[run_.status.value] += 1
                progress.advance(finishing)
    return tally
