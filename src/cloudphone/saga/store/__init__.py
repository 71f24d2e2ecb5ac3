"""Persistence of saga runs: tables, the database wrapper and the SQL store."""

from cloudphone.saga.store.database import Database
from cloudphone.saga.store.tables import metadata, saga_events, saga_runs

__all__ = ["Database", "metadata", "saga_events", "saga_runs"]
