"""What every command shares: settings loading, consoles, an event loop, error exits.

The CLI answers ``--help`` without importing the platform: every module of ``cloudphone.cli``
imports only Typer, Rich and light parts of cloudphone at the top, and the heavy ones
(SQLAlchemy, FastAPI, pydantic, the platform) inside the commands that use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from cloudphone.domain import DomainError

if TYPE_CHECKING:
    from cloudphone.settings import Settings

T = TypeVar("T")

OFF_TERMINAL_WIDTH = 160
"""Width of tables written to a pipe or file when ``COLUMNS`` is not set (Rich's own default,
80, is too narrow for tables of UUIDs and errors)."""

EXIT_FAILED = 1
"""The operation was refused or failed (unknown saga, wrong state, database down)."""
EXIT_USAGE = 2
"""Invalid settings or arguments."""


def out() -> Console:
    """A console on stdout, for results (tables, JSON, tokens).

    As wide as the terminal (or ``COLUMNS``); off a terminal :data:`OFF_TERMINAL_WIDTH`.
    """
    return Console(highlight=False, width=_width(sys.stdout))


def err() -> Console:
    """A console on stderr, for progress, messages and errors."""
    return Console(stderr=True, highlight=False, width=_width(sys.stderr))


def _width(stream: Any) -> int | None:
    if os.environ.get("COLUMNS", "").isdigit() or stream.isatty():
        return None  # Rich reads COLUMNS, or asks the terminal
    return OFF_TERMINAL_WIDTH


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``message`` in red on stderr and exit with ``code``."""
    err().print(f"[red]error:[/red] {escape(message)}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def load(**overrides: Any) -> Settings:
    """The settings (CLI flags that were given win over the environment); exits 2 if invalid.

    Also configures logging from them.
    """
    from cloudphone.logs import configure_logging
    from cloudphone.settings import SettingsError, load_settings

    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        settings = load_settings(**given)
    except SettingsError as error:
        fail(str(error), EXIT_USAGE)
    configure_logging(settings.log_level, settings.log_format)
    return settings


@contextlib.contextmanager
def failures_as_exit() -> Iterator[None]:
    """Turn the errors an operator can act on into a message and exit code 1."""
    from sqlalchemy.exc import DBAPIError

    from cloudphone.deployment import DeploymentMismatchError
    from cloudphone.extras import MissingExtraError
    from cloudphone.saga import SagaError

    try:
        yield
    except (DomainError, SagaError, DeploymentMismatchError) as error:
        fail(str(error))
    except MissingExtraError as error:
        fail(str(error), EXIT_USAGE)
    except DBAPIError as error:
        fail(
            f"database error: {error.orig or error}\n"
            "(is the database reachable and migrated? `cloudphone db upgrade`)"
        )
    except (OSError, TimeoutError) as error:
        fail(str(error) or type(error).__name__)


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a fresh event loop (uvloop when installed)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner, failures_as_exit():
        return runner.run(main())


def print_json(value: Any) -> None:
    """Write ``value`` as indented JSON to stdout (no colour, pipe-friendly)."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
