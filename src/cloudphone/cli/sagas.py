"""``cloudphone sagas``: list, show, retry, cancel, resolve, migrate, fork (straight on the DB)."""

from __future__ import annotations

import contextlib
import getpass
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from cloudphone.cli._shared import EXIT_USAGE, fail, load, out, print_json, run
from cloudphone.cli.runs_table import runs_table, status_markup

if TYPE_CHECKING:
    from cloudphone.api.schemas import SagaDetail
    from cloudphone.saga import SagaEngine, SagaRun
    from cloudphone.settings import Settings

T = TypeVar("T")

app = typer.Typer(help="Inspect and operate saga runs.", no_args_is_help=True)


def _status(text: str) -> str:
    """A saga status in any case (checked here: listing the choices needs the engine)."""
    from cloudphone.saga import SagaStatus

    try:
        return SagaStatus(text.upper()).value
    except ValueError:
        raise typer.BadParameter(f"{text!r}: use one of {', '.join(SagaStatus)}") from None


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SagaIdArg = Annotated[str, typer.Argument(help="The saga run id.")]
ActorOption = Annotated[
    str | None, typer.Option(help="Who acts, for the history [default: cli:<login>].")
]


def _with_engine(settings: Settings, action: Callable[[SagaEngine], Awaitable[T]]) -> T:
    from cloudphone.platform import build_platform

    async def main() -> T:
        platform = build_platform(settings, with_worker=False)
        try:
            return await action(platform.engine)
        finally:
            await platform.close()

    return run(main)


def parse_when(text: str | None) -> datetime | None:
    """``2h`` (that long ago), or an ISO date-time (UTC when it has no offset)."""
    from cloudphone.config import parse_duration

    if text is None:
        return None
    with contextlib.suppress(ValueError):
        return datetime.now(UTC) - parse_duration(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{text!r} is neither a duration (2h) nor an ISO date-time", EXIT_USAGE)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command("list")
def list_runs(
    status: Annotated[
        str | None, typer.Option(parser=_status, help="Only this status (FAILED, any case).")
    ] = None,
    saga_type: Annotated[str | None, typer.Option("--type", help="Only this saga type.")] = None,
    since: Annotated[str | None, typer.Option(help="Created since: 2h, 7d or ISO.")] = None,
    until: Annotated[str | None, typer.Option(help="Created before: 2h, 7d or ISO.")] = None,
    attention: Annotated[
        bool, typer.Option("--attention", help="Only FAILED runs nobody resolved.")
    ] = False,
    orphaned: Annotated[
        bool,
        typer.Option("--orphaned", help="Only active runs of a version no live worker drives."),
    ] = False,
    forked_from: Annotated[str | None, typer.Option(help="Only the forks of this run.")] = None,
    started_by: Annotated[str | None, typer.Option(help="Only runs this user started.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonOption = False,
) -> None:
    """List runs, newest first.

    The table fits the terminal without ever wrapping an id: on a narrow one it leaves out
    the least needed columns and says which (``--json`` has everything).
    """
    from cloudphone.api.schemas import SagaSummary
    from cloudphone.saga import SagaStatus

    settings = load()
    runs = _with_engine(
        settings,
        lambda engine: engine.list(
            status=SagaStatus(status) if status else None,
            saga_type=saga_type,
            started_by=started_by,
            created_after=parse_when(since),
            created_before=parse_when(until),
            needs_attention=attention,
            orphaned=orphaned,
            forked_from=forked_from,
            limit=limit,
            offset=offset,
        ),
    )
    if as_json:
        print_json([SagaSummary.of(r).model_dump(mode="json") for r in runs])
        return
    console = out()
    console.print(runs_table(runs, console.width))


@app.command()
def show(saga_id: SagaIdArg, as_json: JsonOption = False) -> None:
    """Show a run and its full history."""
    from cloudphone.api.schemas import SagaDetail

    settings = load()

    async def read(engine: SagaEngine) -> SagaDetail:
        return SagaDetail.with_history(await engine.get(saga_id), await engine.history(saga_id))

    detail = _with_engine(settings, read)
    if as_json:
        print_json(detail.model_dump(mode="json"))
        return
    console = out()
    console.print(detail_table(detail))
    console.print(history_table(detail))


@app.command()
def retry(
    saga_id: SagaIdArg,
    note: Annotated[str | None, typer.Option(help="Why, for the history.")] = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resume a FAILED run at the step that failed."""
    settings = load()
    who = actor or _login()
    run_ = _with_engine(settings, lambda engine: engine.retry(saga_id, note=note, actor=who))
    _report("retried", run_, as_json)


@app.command()
def cancel(saga_id: SagaIdArg, actor: ActorOption = None, as_json: JsonOption = False) -> None:
    """Cancel a run before its pivot; what started is compensated."""
    settings = load()
    who = actor or _login()
    run_ = _with_engine(settings, lambda engine: engine.cancel(saga_id, actor=who))
    _report("cancel requested for", run_, as_json)


@app.command()
def resolve(
    saga_id: SagaIdArg,
    note: Annotated[str, typer.Option(help="What was done by hand (required).")],
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close a FAILED run by hand with a note; it stays FAILED, marked resolved."""
    settings = load()
    who = actor or _login()
    run_ = _with_engine(settings, lambda engine: engine.resolve(saga_id, note, actor=who))
    _report("resolved", run_, as_json)


@app.command()
def migrate(
    saga_id: SagaIdArg,
    to_version: Annotated[int, typer.Option(min=1, help="The version to move it to.")],
    note: Annotated[str | None, typer.Option(help="Why, for the history.")] = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move an active or FAILED run to another version of its saga (steps matched by name).

    Refused when that version lacks the run's current step or a step it did, reorders them,
    or would move it across a pivot. A FAILED run stays FAILED: retry it afterwards.
    """
    settings = load()
    who = actor or _login()
    run_ = _with_engine(
        settings, lambda engine: engine.migrate(saga_id, to_version, note=note, actor=who)
    )
    _report(f"moved to version {run_.saga_version}:", run_, as_json)


@app.command()
def fork(
    saga_id: SagaIdArg,
    from_step: Annotated[str, typer.Option(help="The first step the new run runs again.")],
    note: Annotated[str | None, typer.Option(help="Why, for both histories.")] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Fork even across a pivot the original completed, or after a step it undid "
            "or never completed (the histories say so).",
        ),
    ] = False,
    actor: ActorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a new run of a finished one, with its data before FROM_STEP; prints the new run."""

    async def forked(engine: SagaEngine) -> SagaRun:
        fork_id = await engine.fork(saga_id, from_step, note=note, force=force, actor=who)
        return await engine.get(fork_id)

    settings = load()
    who = actor or _login()
    run_ = _with_engine(settings, forked)
    _report(f"forked {saga_id} as", run_, as_json)


def _login() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name in some containers
        return "cli"


def _report(done: str, run_: SagaRun, as_json: bool) -> None:
    from cloudphone.api.schemas import SagaSummary

    if as_json:
        print_json(SagaSummary.of(run_).model_dump(mode="json"))
        return
    where = run_.current_step or "-"
    out().print(f"{done} {run_.id}: now {status_markup(run_.status)} at {where}")


def detail_table(detail: SagaDetail) -> Table:
    """The current state of one run, a field per line."""
    table = Table(show_header=False, title=f"saga {detail.id}", title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("type", detail.saga_type)
    table.add_row("status", status_markup(detail.status))
    fields = detail.model_dump(exclude={"id", "saga_type", "status", "history", "data"})
    for name, value in fields.items():
        if value not in (None, False):
            table.add_row(name.replace("_", " "), Text(str(value)))
    table.add_row("data", Text(json.dumps(detail.data, default=str)))
    return table


def history_table(detail: SagaDetail) -> Table:
    """The run's history, an event per line."""
    table = Table(title="history", title_justify="left")
    for column in ("#", "at (UTC)", "event", "step", "try", "detail"):
        table.add_column(column, overflow="fold")
    for e in detail.history:
        table.add_row(
            str(e.seq),
            e.at.strftime("%H:%M:%S.%f")[:-3],
            e.kind.value,
            e.step or "",
            str(e.attempt or ""),
            Text(json.dumps(e.detail, default=str)) if e.detail else "",
        )
    return table
