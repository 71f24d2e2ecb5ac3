"""The store contract's backends: the in-memory store, SQLite and PostgreSQL, one interface.

Each backend is a :class:`~cloudphone.saga.store.base.SagaStore` on a :class:`ManualClock`,
plus the business database its transactional steps write through (the store's own database
for the SQL stores; a SQLite file for the memory store) with one table to count writes in.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cloudphone.saga import Database, SagaRun
from cloudphone.saga.store.base import NewRun, SagaStore
from cloudphone.saga.store.memory import MemoryStore
from cloudphone.saga.store.sql import SqlStore
from cloudphone.saga.testing import ManualClock

LEASE = timedelta(seconds=10)

BACKENDS = ("memory", "sqlite", "postgres")

contract_metadata = sa.MetaData()

contract_effects = sa.Table(
    "contract_effects",
    contract_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("saga_id", sa.String(36), nullable=False, index=True),
)
"""One row per committed business write of a transactional step."""


@dataclass
class Backend:
    """A store under contract, its clock, and the database its step transactions use."""

    name: str
    store: SagaStore
    clock: ManualClock
    business: Database
    saga_type: str
    """A saga type of this test's own (PostgreSQL is shared by every test)."""

    def new_run(self, **fields: Any) -> NewRun:
        """A run of this test's saga type, due now; ``fields`` override."""
        values: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "saga_type": self.saga_type,
            "data": {"n": 1},
            "first_step": "A",
            "idempotency_key": None,
            "started_by": None,
            "deadline_at": None,
            "now": self.clock.now(),
            **fields,
        }
        return NewRun(**values)

    async def insert(self, **fields: Any) -> SagaRun:
        """Insert a new run and read it back."""
        run_id, inserted = await self.store.insert_run(self.new_run(**fields))
        assert inserted
        return await self.read(run_id)

    async def read(self, run_id: str) -> SagaRun:
        """The run, which must exist."""
        run = await self.store.get(run_id)
        assert run is not None, run_id
        return run

    async def effects(self, run_id: str) -> int:
        """Committed business writes of the run."""
        async with self.business.read() as conn:
            count = await conn.scalar(
                sa.select(sa.func.count()).where(contract_effects.c.saga_id == run_id)
            )
        return int(count or 0)


@asynccontextmanager
async def open_backend(
    name: str, tmp_path: Path, unique: str, postgres_url: str | None
) -> AsyncIterator[Backend]:
    """Open one backend with its tables; close it afterwards."""
    clock = ManualClock()
    if name == "memory":
        business = Database(f"sqlite+aiosqlite:///{tmp_path / 'business.db'}")
        store: SagaStore = MemoryStore(clock, LEASE, business)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}" if name == "sqlite" else postgres_url
        assert url is not None
        business = Database(url)
        store = SqlStore(business, LEASE, clock)
    await store.create_schema()
    async with business.begin() as conn:
        await conn.run_sync(contract_metadata.create_all)
    try:
        yield Backend(name, store, clock, business, f"contract_{unique}")
    finally:
        await store.close()
        await business.dispose()
