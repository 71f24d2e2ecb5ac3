"""``cloudphone db``: apply and inspect the schema migrations."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudphone.cli._shared import err, failures_as_exit, load, out

app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply pending migrations.

    serve and worker also do it at start, unless CLOUDPHONE_AUTO_MIGRATE=false.
    """
    from sqlalchemy.engine import make_url

    from cloudphone import schema

    settings = load()
    target = make_url(settings.database_url).render_as_string(hide_password=True)
    with failures_as_exit():
        before = schema.current_revision(settings.database_url)
        with err().status(f"migrating {target} from {before or 'empty'} to {revision}…"):
            schema.upgrade(settings.database_url, revision)
        after = schema.current_revision(settings.database_url)
    out().print(f"database at revision {after} (was {before or 'empty'}): {target}")


@app.command()
def current() -> None:
    """Print the database's revision and the newest one."""
    from cloudphone import schema

    settings = load()
    with failures_as_exit():
        at = schema.current_revision(settings.database_url)
    head = schema.head_revision()
    state = "up to date" if at == head else "needs `cloudphone db upgrade`"
    out().print(f"current: {at or 'empty'}  head: {head}  ({state})")
