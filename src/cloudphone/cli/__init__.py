"""The ``cloudphone`` command: serve, worker, db, sagas, token, demo, config, apps, devices.

Thin: each command loads the settings, builds what it needs through
:mod:`cloudphone.platform` and prints the result (tables on a terminal, ``--json`` for
scripts). Exit codes: 0 done, 1 refused or failed, 2 invalid settings or arguments.
"""

from __future__ import annotations

import typer

from cloudphone.cli import apps, config, db, devices, sagas, tokens
from cloudphone.cli.demo import demo
from cloudphone.cli.server import serve, worker

app = typer.Typer(
    name="cloudphone",
    help="Cloud-phone platform: HTTP API, saga workers and operator tools.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command()(serve)
app.command()(worker)
app.command()(demo)
app.add_typer(db.app, name="db")
app.add_typer(sagas.app, name="sagas")
app.add_typer(tokens.app, name="token")
app.add_typer(config.app, name="config")
app.add_typer(apps.app, name="apps")
app.add_typer(devices.app, name="devices")


def main() -> None:
    """Entry point of the ``cloudphone`` script."""
    app()


__all__ = ["app", "main"]
