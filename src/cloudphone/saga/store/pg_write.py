"""One queued write and its step's progress in one PostgreSQL statement (asyncpg).

A transactional step that sent nothing on ``ctx.session`` and queued one INSERT, UPDATE or
DELETE with ``ctx.write`` needs no explicit transaction: its write becomes a data-modifying
CTE ``w`` chained with the progress UPDATE ``u`` and events INSERT ``e`` of
:data:`~.pg_sql.COMMIT_ONE_SQL`, sent outside a transaction (an implicit one, atomic):

    WITH w AS (<the write, $1..$k>), u AS (<progress, $k+1...>), e AS (<events>)
    SELECT fence.ok, u.id, ... FROM (SELECT CASE WHEN EXISTS (SELECT 1 FROM u) THEN 1
        ELSE CAST('cloudphone: progress fenced off ' || ... AS int) END) AS fence(ok)
    LEFT JOIN u ON true

Every CTE runs to completion whether or not the others match rows, so without the fence the
business write would commit while its progress was refused (epoch or ``last_seq``): the fence
reads ``u``, so it is evaluated at run time, and when ``u`` matched nothing the cast fails
(``invalid_text_representation`` with :data:`FENCED` in its text) and the whole statement,
the write included, is undone. It is selected, so it cannot be planned away.

Only our SQL is renumbered (it has no ``$n`` in literals); the write is compiled by
SQLAlchemy for the connection's dialect (``$n`` parameters), its values passed through each
bind type's processor, and expanding parameters (``IN``) expanded per call
(``construct_expanded_state``). Anything this cannot do safely goes the ordinary way.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Delete, Insert, TupleType, Update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import TextClause

from cloudphone.saga.context import QueuedWrite
from cloudphone.saga.store.pg_sql import COMMIT_ONE_CTES

FENCED = "cloudphone: progress fenced off"
"""The marker of the fence's error: the progress matched no row, nothing was written."""

FENCED_SQLSTATE = "22P02"
"""invalid_text_representation: what the fence's failing cast raises."""

_FENCED_SELECT = f"""SELECT fence.ok, u.id, u.epoch, u.last_seq, u.cancel_requested
FROM (SELECT CASE WHEN EXISTS (SELECT 1 FROM u) THEN 1
      ELSE CAST('{FENCED} ' || (SELECT count(*) FROM u) AS int) END) AS fence(ok)
LEFT JOIN u ON true
"""

_DML = ("INSERT", "UPDATE", "DELETE")


class NotCombined(Exception):
    """A queued write was not sent with its progress: nothing was written, go the ordinary way.

    Raised by ``PgFastPath.commit_writing`` before sending (the write cannot be a CTE, the
    connection is not asyncpg's or has a transaction open) or when the statement failed for
    a reason of the write.
    """


_CACHE_SIZE = 256

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    compiled: SQLCompiler
    processors: dict[str, Processor]
    fixed: tuple[str, Sequence[str]] | None
    """The write's SQL and the order of its parameters, when no value changes the write's
    SQL (no IN to expand, no value rendered into it)."""


class _Seen:
    """A statement seen once and not compiled (see ``driver_sql``'s ``compile_new``)."""


_SEEN = _Seen()
_Key = tuple[int, int, tuple[str, ...]]
_Entry = tuple[object, object, "_Compiled | _Seen | None"]
_cache: dict[_Key, _Entry] = {}
"""Compiled writes by (statement, dialect, parameter names); each entry holds its statement
and dialect, so that their ids cannot be reused while it lives."""


PROGRESS_TAIL = COMMIT_ONE_CTES + _FENCED_SELECT
"""What follows the write in the statement of a step's write and its progress."""


def combined(
    write: QueuedWrite, conn: AsyncConnection, tail: str = PROGRESS_TAIL
) -> tuple[str, list[Any]] | None:
    """The write as CTE ``w`` before ``tail``, and the write's k parameters.

    ``tail`` is the rest of the statement (CTEs, then its SELECT) numbered from ``$1``; its
    parameters follow the write's. None if the write cannot be a CTE as it is.
    """
    one = driver_sql(write, conn)
    if one is None:
        return None
    write_sql, args = one
    return _joined(write_sql, tail, len(args)), args


def driver_sql(
    write: QueuedWrite, conn: AsyncConnection, compile_new: bool = True
) -> tuple[str, list[Any]] | None:
    """The write's own SQL (``$n`` parameters) and its arguments, as the driver takes them.

    None if it is not a plain INSERT, UPDATE or DELETE that can be sent as it is (see the
    module doc), or ``conn`` translates schema names: it goes through SQLAlchemy instead.
    Without ``compile_new`` a statement is compiled only when it comes again (the same
    object): one built per call goes through SQLAlchemy, whose cache compiles it once per
    shape (ours is by object), instead of being compiled here on every call.
    """
    params = write.params
    if isinstance(params, list):
        return None  # executemany
    sync = conn.sync_connection
    if sync is None or sync.get_execution_options().get("schema_translate_map"):
        return None
    found = _compiled(write.statement, conn.dialect, tuple(params or ()), compile_new)
    if found is None:
        return None
    values: Mapping[str, Any]
    try:
        if found.fixed is not None:
            write_sql, order = found.fixed
            values = found.compiled.construct_params(params)
            processors = found.processors
        else:
            state = found.compiled.construct_expanded_state(params)
            if state.positiontup is None:
                return None
            order = state.positiontup
            write_sql = state.statement
            values = state.parameters
            processors = {**found.processors, **state.processors}
    except Exception:  # a missing value, say: executed the ordinary way, it raises there
        return None
    return write_sql, [processors[n](values[n]) if n in processors else values[n] for n in order]


def live_connection(conn: AsyncConnection) -> PoolProxiedConnection | None:
    """The DBAPI connection under ``conn`` if it is checked out and live (no I/O), else None."""
    sync = conn.sync_connection
    if sync is not None and not sync.closed and not sync.invalidated:
        return sync.connection
    return None


async def raw_connection(conn: AsyncConnection) -> PoolProxiedConnection:
    """The DBAPI connection under ``conn``, without a greenlet hop when it is checked out."""
    return live_connection(conn) or await conn.get_raw_connection()


def is_fenced(error: BaseException) -> bool:
    """Whether the combined statement failed on its fence (nothing of it was written)."""
    return getattr(error, "sqlstate", None) == FENCED_SQLSTATE and FENCED in str(error)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _joined(write_sql: str, tail: str, k: int) -> str:
    """The write as CTE ``w``, then ``tail`` with its parameters from ``$k+1``.

    Built once per write and tail: a fixed write's SQL is the same string on every call.
    """
    renumbered = re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + k}", tail)
    return f"WITH w AS (\n{write_sql}\n), {renumbered}"


def _compiled(
    statement: object, dialect: Dialect, keys: tuple[str, ...], compile_new: bool
) -> _Compiled | None:
    key = (id(statement), id(dialect), keys)
    cached = _cache.get(key)
    if cached is not None and cached[0] is statement and cached[1] is dialect:
        if not isinstance(cached[2], _Seen):
            return cached[2]
    elif not compile_new:
        _remember(key, (statement, dialect, _SEEN))
        return None
    found = _compile(statement, dialect, keys)
    _remember(key, (statement, dialect, found))
    return found


def _remember(key: _Key, entry: _Entry) -> None:
    _cache.pop(key, None)
    if len(_cache) >= _CACHE_SIZE:
        del _cache[next(iter(_cache))]  # the oldest: statements built per call churn it
    _cache[key] = entry


def _compile(statement: object, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled | None:
    """Compile ``statement`` if it can be a CTE as it is (a plain INSERT, UPDATE or DELETE)."""
    if isinstance(statement, Insert | Update | Delete):
        if statement.entity_description.get("entity") is not None:
            return None  # an ORM entity's: its execution may do more than the SQL says
    elif not isinstance(statement, TextClause):
        return None
    if statement.get_execution_options():
        return None
    try:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    except Exception:
        return None
    if not isinstance(compiled, SQLCompiler) or not _plain(compiled):
        return None
    processors: dict[str, Processor] = {}
    for name, bind in compiled.binds.items():
        if isinstance(bind.type, TupleType):
            return None
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors[name] = processor
    fixed = None
    if not compiled.post_compile_params and not compiled.literal_execute_params:
        order = compiled.positiontup or ()
        fixed = (compiled.string, tuple(order))
    return _Compiled(compiled, processors, fixed)


def _plain(compiled: SQLCompiler) -> bool:
    """A positional statement that starts with INSERT, UPDATE or DELETE and is only that."""
    sql = compiled.string.lstrip()
    return (
        compiled.positional
        and sql[:6].upper() in _DML
        and sql[6:7].isspace()
        and ";" not in sql
        # Python-side column defaults are computed by an execution, not by the SQL.
        and not compiled.insert_prefetch
        and not compiled.update_prefetch
        and not compiled.escaped_bind_names
    )
