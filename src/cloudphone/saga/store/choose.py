"""Which store an engine runs on: the SQL store on a database, or the store it was given."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudphone.saga.ports import Clock, SystemClock
from cloudphone.saga.store.base import SagaStore
from cloudphone.saga.store.database import Database
from cloudphone.saga.store.sql import STEP_GROUP, SqlStore

DEFAULT_LEASE = timedelta(seconds=30)


def choose_store(
    database: str | URL | AsyncEngine | Database | None,
    store: SagaStore | None,
    lease: timedelta | None,
    clock: Clock | None,
    step_group: int | None = None,
) -> tuple[SagaStore, tuple[bool, Database | None]]:
    """The engine's store, and what the engine must close: (its store?, a database it made).

    Raises:
        ValueError: Both or neither of ``database`` and ``store``; a lease or clock that is
            not the given store's.
    """
    if store is not None:
        if database is not None:
            raise ValueError("pass either a database or a store, not both")
        if lease is not None and lease != store.lease:
            raise ValueError(f"lease {lease} differs from the store's {store.lease}")
        if step_group is not None:
            raise ValueError("step_group is a setting of the SQL store; set it on the store")
        if clock is not None and clock is not store.clock:
            raise ValueError("clock differs from the store's; give the store the clock")
        return store, (False, None)
    if database is None:
        raise ValueError("SagaEngine needs a database (URL, AsyncEngine or Database) or a store")
    db = database if isinstance(database, Database) else Database(database)
    group = STEP_GROUP if step_group is None else step_group
    made = SqlStore(db, lease or DEFAULT_LEASE, clock or SystemClock(), step_group=group)
    return made, (True, None if isinstance(database, Database) else db)
