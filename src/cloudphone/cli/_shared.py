"""What every command shares: settings loading, consoles, an event loop, error exits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import DBAPIError

from cloudphone.domain import DomainError
from cloudphone.logs import configure_logging
from cloudphone.saga import SagaError
from cloudphone.settings import Settings, SettingsError, load_settings

T = TypeVar("T")

# Off a terminal Rich assumes 80 columns; tables of UUIDs and errors need more.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
"""Results (tables, JSON, tokens) go to stdout."""
err = Console(stderr=True, highlight=False)
"""Progress, messages and errors go to stderr."""

EXIT_FAILED = 1
"""The operation was refused or failed (unknown saga, wrong state, database down)."""
EXIT_USAGE = 2
"""Invalid settings or arguments."""


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``message`` in red on stderr and exit with ``code``."""
    # Escaped: a message may hold brackets (`cloudphone[otel]`) that are not Rich markup.
    err.print(f"[red]error:[/red] {escape(message)}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def load(**overrides: Any) -> Settings:
    """The settings (CLI flags that were given win over the environment); exits 2 if invalid.

    Also configures logging from them.
    """
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
    try:
        yield
    except (DomainError, SagaError) as error:
        fail(str(error))
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
