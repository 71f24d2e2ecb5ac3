"""``cloudphone devices``: operator tools for devices (the applications on one)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cloudphone.cli._shared import load, out, print_json, run

if TYPE_CHECKING:
    from cloudphone.installs.models import Installation

app = typer.Typer(help="Operate the devices service.", no_args_is_help=True)


@app.command("apps")
def apps(
    device_id: Annotated[str, typer.Argument(help="The device id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List a device's applications and the runs that hold or last moved them (any device).

    To install or uninstall, use the API (``POST``/``DELETE /devices/{id}/apps``): those act
    for a user, with their rights to the device and the application.
    """
    from cloudphone.domain import Principal, Role
    from cloudphone.platform import build_platform

    settings = load()

    async def main() -> list[Installation]:
        platform = build_platform(settings, with_worker=False)
        try:
            operator = Principal("cli", Role.ADMIN)
            return await platform.installs.list_installations(operator, device_id)
        finally:
            await platform.close()

    rows = run(main)
    if as_json:
        print_json([asdict(row) for row in rows])
        return
    table = Table("package", "version", "status", "installed at", "saga")
    for row in rows:
        version = f"{row.version_name or '-'} ({row.version_code})"
        installed = row.installed_at.isoformat(timespec="seconds") if row.installed_at else "-"
        table.add_row(row.package_name, version, row.status.value, installed, row.saga_id)
    out().print(table if rows else f"device {device_id} has no application")
