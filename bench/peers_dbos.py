"""DBOS 3.4 in ``bench/peers.py``: the same 4-step saga as a DBOS workflow.

DBOS keeps its state in its *system database*: here the fresh database of the run, schema
``dbos``. Each cell launches DBOS in this child process and destroys it at the end (DBOS is a
process-wide singleton; the workflows stay registered).

Two variants of T1 and T3, because DBOS 3 has no ``@DBOS.transaction``:

- ``dbos``: every step is a ``@DBOS.step``. In the ``write`` shape T1 and T3 INSERT their row
  in a transaction of their own (its own commit, on a SQLAlchemy engine of the same database)
  and DBOS then checkpoints the step's output: the same rows and the same durability
  (``synchronous_commit=on``) as cloudphone, but the row is written at least once, not
  exactly once (a crash between the two commits repeats it).
- ``dbos-ds``: T1 and T3 are transactions of a DBOS *datasource*
  (``SQLAlchemyDatasource.transaction``, READ COMMITTED like cloudphone's steps): the INSERT
  commits with the step's checkpoint row, exactly once, as in cloudphone.

Clients (``mode``): ``threads`` — C threads each calling the workflow function (DBOS runs it
in the calling thread); ``async`` — C asyncio tasks awaiting an ``async`` workflow (``dbos``
variant only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa
from dbos import DBOS, SQLAlchemyDatasource
from peers_common import (
    BUSINESS_DDL,
    BUSINESS_TABLE,
    Cell,
    CellResult,
    libpq,
    measured,
    timed_async,
    timed_threads,
    with_driver,
)

INSERT = sa.text(f"INSERT INTO {BUSINESS_TABLE} (run_id, step) VALUES (:run, :step)")


class Business:
    """The engine T1 and T3 write their rows with (``dbos`` variant), set per cell."""

    engine: sa.Engine | None = None
    async_engine: Any = None


def _insert(step: str) -> None:
    assert Business.engine is not None
    with Business.engine.begin() as conn:  # its own commit, inside the step
        conn.execute(INSERT, {"run": DBOS.workflow_id, "step": step})


# -- dbos: steps only -----------------------------------------------------------------------


@DBOS.step(name="peers_t1")
def t1(i: int, write: bool) -> dict[str, Any]:
    if write:
        _insert("T1")
    return {"t1": i}


@DBOS.step(name="peers_s2")
def s2() -> dict[str, Any]:
    return {"s2": f"{DBOS.workflow_id}:S2"}


@DBOS.step(name="peers_t3")
def t3(write: bool) -> None:
    if write:
        _insert("T3")


@DBOS.step(name="peers_s4")
def s4() -> None:
    return None


@DBOS.workflow(name="peers_saga")
def saga(i: int, write: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"i": i}
    data.update(t1(i, write))
    data.update(s2())
    t3(write)
    s4()
    return data


# -- dbos, async clients --------------------------------------------------------------------


async def _insert_async(step: str) -> None:
    async with Business.async_engine.begin() as conn:
        await conn.execute(INSERT, {"run": DBOS.workflow_id, "step": step})


@DBOS.step(name="peers_async_t1")
async def t1_async(i: int, write: bool) -> dict[str, Any]:
    if write:
        await _insert_async("T1")
    return {"t1": i}


@DBOS.step(name="peers_async_s2")
async def s2_async() -> dict[str, Any]:
    return {"s2": f"{DBOS.workflow_id}:S2"}


@DBOS.step(name="peers_async_t3")
async def t3_async(write: bool) -> None:
    if write:
        await _insert_async("T3")


@DBOS.step(name="peers_async_s4")
async def s4_async() -> None:
    return None


@DBOS.workflow(name="peers_async_saga")
async def saga_async(i: int, write: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"i": i}
    data.update(await t1_async(i, write))
    data.update(await s2_async())
    await t3_async(write)
    await s4_async()
    return data


# -- dbos-ds: T1 and T3 as datasource transactions -----------------------------------------

_DS_SAGA: dict[str, Callable[[int, bool], dict[str, Any]]] = {}


def datasource_saga(url: str, pool: int) -> Callable[[int, bool], dict[str, Any]]:
    """The workflow on a datasource of ``url`` (built once per process: DBOS registers it)."""
    if url in _DS_SAGA:
        return _DS_SAGA[url]
    ds = SQLAlchemyDatasource.create(
        with_driver(url, "postgresql+psycopg"),
        engine_kwargs={"pool_size": pool, "max_overflow": 0},
        run_migrations=False,  # prepare() migrated it, before any cell counts transactions
    )

    @ds.transaction(name="peers_ds_t1", isolation_level="READ COMMITTED")
    def ds_t1(i: int, write: bool) -> dict[str, Any]:
        if write:
            ds.sql_session().execute(INSERT, {"run": DBOS.workflow_id, "step": "T1"})
        return {"t1": i}

    @ds.transaction(name="peers_ds_t3", isolation_level="READ COMMITTED")
    def ds_t3(write: bool) -> None:
        if write:
            ds.sql_session().execute(INSERT, {"run": DBOS.workflow_id, "step": "T3"})

    @DBOS.workflow(name="peers_ds_saga")
    def ds_saga(i: int, write: bool) -> dict[str, Any]:
        data: dict[str, Any] = {"i": i}
        data.update(ds_t1(i, write))
        data.update(s2())
        ds_t3(write)
        s4()
        return data

    _DS_SAGA[url] = ds_saga
    return ds_saga


# -- cells ----------------------------------------------------------------------------------


def prepare(url: str, system: str) -> None:
    """DBOS's system tables, the datasource's table and the business table."""
    DBOS.migrate(with_driver(url, "postgresql+psycopg"))
    if system == "dbos-ds":
        SQLAlchemyDatasource.migrate(with_driver(url, "postgresql+psycopg"))
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(BUSINESS_DDL)


def launch(cell: Cell) -> None:
    config: dict[str, Any] = {
        "name": "peers",
        "system_database_url": with_driver(cell.url, "postgresql+psycopg"),
        "log_level": "WARNING",
        "run_migrations": False,
    }
    if cell.options.get("pool"):
        config["sys_db_pool_size"] = cell.options["pool"]
    DBOS(config=config)  # type: ignore[arg-type]
    DBOS.launch()


def run_cell(cell: Cell) -> CellResult:
    write = cell.shape == "write"
    mode = cell.options.get("mode", "threads")
    if mode == "async" and cell.system == "dbos-ds":
        raise SystemExit("dbos-ds runs with thread clients only (--dbos-mode threads)")
    pool = min(cell.concurrency, 20)
    with measured(cell) as meter:
        workflow = datasource_saga(cell.url, pool) if cell.system == "dbos-ds" else saga
        Business.engine = sa.create_engine(
            with_driver(cell.url, "postgresql+psycopg"), pool_size=pool, max_overflow=0
        )
        launch(cell)
        try:
            if mode == "async":
                timing = asyncio.run(_run_async_clients(cell, meter, write))
            else:

                def one(i: int) -> None:
                    if workflow(i, write)["i"] != i:
                        raise RuntimeError("workflow returned another saga's data")

                timing = timed_threads(cell, meter, one)
        finally:
            DBOS.destroy()
            Business.engine.dispose()
            _dispose_datasources()
        return meter.result(timing)


async def _run_async_clients(cell: Cell, meter: Any, write: bool) -> Any:
    from sqlalchemy.ext.asyncio import create_async_engine

    Business.async_engine = create_async_engine(
        with_driver(cell.url, "postgresql+psycopg_async"),
        pool_size=min(cell.concurrency, 20),
        max_overflow=0,
    )

    async def one(i: int) -> None:
        if (await saga_async(i, write))["i"] != i:
            raise RuntimeError("workflow returned another saga's data")

    try:
        return await timed_async(cell, meter, one)
    finally:
        await Business.async_engine.dispose()


def _dispose_datasources() -> None:
    """Close the datasources' pools, so the cell ends with no connection left."""
    from dbos._dbos import _get_or_create_dbos_registry

    registry = _get_or_create_dbos_registry()
    for ds in getattr(registry, "datasources", []):
        ds.engine.dispose()


def run_cells(cells: list[Cell]) -> list[CellResult]:
    """Every cell of one child, in order (the schema first, once per database)."""
    for url in dict.fromkeys(cell.url for cell in cells):
        prepare(url, cells[0].system)
    return [run_cell(cell) for cell in cells]
