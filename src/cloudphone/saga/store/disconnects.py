"""Which errors mean "the database is unavailable" rather than "this statement is wrong".

A server that restarts shows up in many shapes: ``ConnectionRefusedError`` while it is down,
``AdminShutdownError`` (SQLSTATE 57P01) for the sessions it terminates, ``CannotConnectNowError``
(57P03) while it starts, ``ConnectionDoesNotExistError`` or "connection is closed" on a
connection that died, each maybe wrapped by SQLAlchemy. All of them are fatal for the
connection (it must be replaced) and say nothing about the data: a retry on a fresh connection
may succeed. Everything else (a constraint violation, bad SQL) is a data error, which retrying
cannot fix.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import exc as sa_exc

from cloudphone.saga.errors import DatabaseUnavailableError
from cloudphone.saga.store.sqlite_inline import sqlite_busy

CONNECT_TIMEOUT = 5.0
"""Seconds a new connection may take: past it the server counts as unreachable (and the caller
backs off and tries again), instead of the drivers' default minute."""

UNAVAILABLE_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: the server is shutting down (pg_ctl stop -m fast)
        "57P02",  # crash_shutdown: another backend crashed, every session is reset
        "57P03",  # cannot_connect_now: the server is starting up or shutting down
        "57P05",  # idle_session_timeout: the session was closed by the server
        "53300",  # too_many_connections: every pool reconnects at once after a restart
        "25006",  # read_only_sql_transaction: a failover left us on a standby until it moves
    }
)
"""SQLSTATEs of a server that cannot serve now, besides class 08 (connection exception)."""

_NOT_NOW_PHRASES = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "too many clients already",
    "remaining connection slots are reserved",
)
"""What PostgreSQL's FATAL refusals of a connection say when it cannot serve *now*."""

_CLOSED_MESSAGES = ("connection is closed", "underlying connection is closed")
"""asyncpg InterfaceError messages of a connection that died under the caller."""


def driver_error_unavailable(error: BaseException) -> bool:
    """Whether a driver error (asyncpg, psycopg or SQLAlchemy's adapter of one) is trouble.

    Trouble: the connection is gone, or the server cannot serve now; on SQLite, another
    process held the write lock past the busy timeout. Decided by class names, SQLSTATEs and
    SQLite error codes, so no driver needs to be installed to ask.
    """
    if sqlite_busy(error):
        return True
    if _asyncpg_class(error, "ConnectionDoesNotExistError"):
        return True
    if _asyncpg_class(error, "InterfaceError"):
        return any(text in str(error) for text in _CLOSED_MESSAGES)
    if _asyncpg_class(error, "InternalClientError"):
        # The server's termination notice arrived on an idle connection and left its protocol
        # waiting for a reply that never comes: unusable, though not yet seen as closed.
        return "cannot switch to state" in str(error)
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if isinstance(sqlstate, str):
        return sqlstate.startswith("08") or sqlstate in UNAVAILABLE_SQLSTATES
    # psycopg reports a failed connect (refused, reset, timed out) as an OperationalError
    # without a SQLSTATE: no server ever answered -- unless the server's FATAL refusal is in the
    # text: then it answered, and only its starting up or shutting down is worth waiting for
    # (a wrong role, password or database name is not).
    if type(error).__name__ != "OperationalError" or not type(error).__module__.startswith(
        "psycopg"
    ):
        return False
    text = str(error)
    return "FATAL:" not in text or any(phrase in text for phrase in _NOT_NOW_PHRASES)


def _asyncpg_class(error: BaseException, name: str) -> bool:
    return any(
        cls.__name__ == name and cls.__module__.startswith("asyncpg") for cls in type(error).__mro__
    )


def is_database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the database is unreachable or restarting.

    True for :class:`~cloudphone.saga.errors.DatabaseUnavailableError`, SQLAlchemy errors that
    invalidated their connection or wrap a connection-class driver error, and an exhausted
    SQLAlchemy pool. A bare ``OSError`` raised by other code (an HTTP call, a file) is not
    counted: only errors that came through the database layers are.
    """
    for link in error_chain(error):
        if isinstance(link, DatabaseUnavailableError | sa_exc.DisconnectionError):
            return True
        if isinstance(link, sa_exc.TimeoutError):  # QueuePool limit reached: no connection
            return True
        if isinstance(link, sa_exc.DBAPIError) and link.connection_invalidated:
            return True
        # Driver errors sit in the chain: SQLAlchemy's wrapper has the driver's (or its
        # adapter's) exception as ``orig`` and cause.
        if driver_error_unavailable(link):
            return True
    return False


def unavailable(error: BaseException, what: str) -> DatabaseUnavailableError:
    """The DatabaseUnavailableError to raise (``from error``) for a failure of ``what``."""
    return DatabaseUnavailableError(f"{what}: {type(error).__name__}: {error}".rstrip(": "))


def error_chain(error: BaseException | None) -> Iterator[BaseException]:
    """``error`` and its causes and contexts, each once (bounded: chains can be cyclic)."""
    seen: set[int] = set()
    pending = [error]
    while pending and len(seen) < 16:
        link = pending.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        pending += [link.__context__, link.__cause__]


def raise_unavailable(error: BaseException, what: str) -> None:
    """Raise DatabaseUnavailableError from ``error`` if it is connection trouble."""
    if is_database_unavailable(error) and not isinstance(error, DatabaseUnavailableError):
        raise unavailable(error, what) from error
