"""Running the writes a transactional step queued with ``ctx.write``, the ordinary way.

Each statement is executed on the step's connection, in order, inside its transaction, before
its progress record; a store that can send one write in the same statement as the record
does so first (see :mod:`.pg_write`) and falls back to this.

A queued statement that fails is the attempt's failure: it leaves as
:class:`~cloudphone.saga.errors.QueuedWriteError` around the error it raised, stripped of the
statement and its parameters (they may hold secrets, and the error ends up in the run's
history and the logs), unless the connection failed under it: that is connection trouble
(:class:`~cloudphone.saga.errors.DatabaseUnavailableError`, equally quiet).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from cloudphone.saga.context import QueuedWrite
from cloudphone.saga.errors import QueuedWriteError
from cloudphone.saga.store.disconnects import error_chain, is_database_unavailable, unavailable


async def run_writes(conn: AsyncConnection, writes: Sequence[QueuedWrite]) -> None:
    """Execute ``writes`` in order on ``conn`` (in its transaction); results are dropped.

    Raises:
        QueuedWriteError: A statement failed (its error, without SQL or parameters).
        DatabaseUnavailableError: The connection failed under one (also without them).
    """
    for write in writes:
        try:
            await conn.execute(write.statement, write.params)
        except Exception as error:
            if is_database_unavailable(error):
                raise unavailable(quiet(error), "queued write") from None
            raise QueuedWriteError(quiet(error)) from None


def quiet(error: Exception) -> Exception:
    """``error`` without the SQL and the parameters SQLAlchemy put in its message.

    Only the first line of the driver's message stays (PostgreSQL's ``DETAIL`` quotes the
    offending values); ``orig`` still holds the driver's error for code that inspects it.
    The causes are cut off, since a traceback would print them.
    """
    if isinstance(error, sa_exc.StatementError):
        error.statement = None
        error.params = None
        error.hide_parameters = True
        first = str(error.args[0]) if error.args else type(error).__name__
        refused = _refused_value(error)
        if refused is not None:
            first = refused
        error.args = (first.splitlines()[0] if first else first,)
    error.__cause__ = None
    error.__context__ = None
    error.__suppress_context__ = True
    return error


def _refused_value(error: BaseException) -> str | None:
    """What to say instead of a message that quotes the value it refused, or None.

    PostgreSQL's data exceptions (SQLSTATE class 22) name the value in the message itself
    (``invalid input syntax for type uuid: "..."``), and so does asyncpg when it cannot
    encode an argument (``invalid input for query argument $1: '...'``, no SQLSTATE).
    """
    for link in error_chain(error):  # SQLAlchemy's error, the adapter's, the driver's
        code = getattr(link, "sqlstate", None)
        if isinstance(code, str) and code.startswith("22"):
            return f"the database refused a value (SQLSTATE {code}); it is not repeated here"
        if "invalid input for query argument" in str(link):
            return "the driver could not encode a value; it is not repeated here"
    return None
