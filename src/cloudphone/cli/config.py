"""``cloudphone config``: the effective settings and the variable that sets each one."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import BaseModel, SecretStr
from rich.table import Table
from rich.text import Text

from cloudphone.cli._shared import load, out, print_json
from cloudphone.settings import env_name

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
    out.print(table)


def flatten(model: BaseModel, prefix: tuple[str, ...]) -> list[tuple[str, Any, str]]:
    """(variable, display value, description) of every field, nested sections expanded."""
    rows: list[tuple[str, Any, str]] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        location = (*prefix, name)
        if isinstance(value, BaseModel):
            rows.extend(flatten(value, location))
            continue
        shown = "**********" if isinstance(value, SecretStr) else value
        doc = (field.description or "").split("\n")[0]
        rows.append((env_name(location), shown if shown is not None else "", doc))
    return rows
