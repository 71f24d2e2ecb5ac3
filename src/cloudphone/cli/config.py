"""``cloudphone config``: the effective settings and the variable that sets each one."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from cloudphone.cli._shared import load, out, print_json

if TYPE_CHECKING:
    from pydantic import BaseModel

app = typer.Typer(help="Settings (CLOUDPHONE_* environment variables).", no_args_is_help=True)


@app.command()
def show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print every setting, its value (secrets hidden) and its environment variable."""
    settings = load()
    rows = list(flatten(settings, ()))
    if as_json:
        print_json({name: value for name, value, _doc in rows})
        return
    table = Table(title="settings", title_justify="left")
    table.add_column("variable", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("meaning", overflow="fold")
    for name, value, doc in rows:
        table.add_row(name, Text(str(value)), Text(doc))
    out().print(table)


def flatten(model: BaseModel, prefix: tuple[str, ...]) -> list[tuple[str, Any, str]]:
    """(variable, display value, description) of every field, nested sections expanded.

    The description is the field's whole docstring on one line; a duration shows the way its
    variable is written (``5m``), a secret as stars.
    """
    from pydantic import BaseModel

    from cloudphone.settings import env_name

    rows: list[tuple[str, Any, str]] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        location = (*prefix, name)
        if isinstance(value, BaseModel):
            rows.extend(flatten(value, location))
            continue
        doc = " ".join((field.description or "").split())
        rows.append((env_name(location), _shown(value), doc))
    return rows


def _shown(value: Any) -> Any:
    from pydantic import SecretStr

    from cloudphone.config import format_duration

    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Path):
        return str(value)
    return "" if value is None else value
