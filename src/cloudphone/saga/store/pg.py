"""PostgreSQL fast path: the engine's hot statements on a dedicated asyncpg pool.

Each statement is one round trip and one commit. A data-modifying CTE chains a run's UPDATE
(fenced by its epoch) with the INSERT of its events, whose sequence numbers come from the
UPDATE's RETURNING. Items travel as one JSON array expanded by ``jsonb_to_recordset``, so many
runs' progress (or many new runs) commit in a single statement: group commit.

Every progress write is fenced by the run's epoch and, when the runner gives it, by the
``last_seq`` it last saw, so a write repeated after a lost answer can never apply twice.
Connection trouble never sticks: the group-commit connections are the fast path's own
(not pool proxies, which the pool reclaims when their connection dies) and are replaced after
any error that is not a plain data error; such errors leave as
:class:`~cloudphone.saga.errors.DatabaseUnavailableError`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
from sqlalchemy.engine import URL

from cloudphone.saga.ports import Clock
from cloudphone.saga.progress import Progress
from cloudphone.saga.records import SagaRun
from cloudphone.saga.store.base import ClaimRequest
from cloudphone.saga.store.batch import Batcher
from cloudphone.saga.store.disconnects import CONNECT_TIMEOUT, driver_error_unavailable
from cloudphone.saga.store.pg_sql import (
    CLAIM_SQL,
    FIND_SQL,
    GET_SQL,
    HEARTBEAT_SQL,
    INSERT_ONE_SQL,
    INSERT_SQL,
    Written,
    insert_args,
    insert_item,
    run_from_record,
    type_arrays,
)
from cloudphone.saga.store.pg_step import (
    StepStatements,
    _in_order,
    _progress_statement,
    _unavailable,
)
from cloudphone.saga.store.pg_step import _Commit as _Commit  # part of this API

SERVER_SETTINGS = {
    "application_name": "cloudphone-saga",
    # Our statements are few and simple: plan once per connection, not per call.
    "plan_cache_mode": "force_generic_plan",
}


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Release a connection to the pool without asyncpg's reset query.

    The pool runs only this module's statements, which change no session state, so the reset
    (advisory unlocks, ``CLOSE ALL``, ``UNLISTEN *``, ``RESET ALL``) was one more round trip and
    transaction per claim, renewal and read. asyncpg still rolls back an open transaction
    before calling this.
    """


_Insert = tuple[Mapping[str, Any], dict[str, Any], bool]
"""A queued start: the new run's column values, its start event's detail, whether to NOTIFY."""


def _is_fatal(error: BaseException) -> bool:
    """Connection trouble fails a whole batch; a data error is retried item by item."""
    return not isinstance(error, asyncpg.PostgresError) or driver_error_unavailable(error)


class PgFastPath(StepStatements):
    """The engine's own statements over asyncpg, with group commit for progress and starts.

    Args:
        url: The database URL (any PostgreSQL driver name; asyncpg is used here).
        lease: Lease length, to stamp ``lease_expires_at`` on progress that keeps the lease.
        clock: Time source; lease ends are taken once a connection is held, just before the
            statement, so waiting for the pool never writes a lease that is already over.
        max_size: Connections in the pool (claims, heartbeats, reads); the two group commits
            have one connection each besides.
    """

    def __init__(self, url: URL, lease: timedelta, clock: Clock, max_size: int = 8) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._lease = lease
        self._clock = clock
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        # Each batcher flushes one batch at a time, so it keeps a connection of its own
        # instead of paying a pool acquire and release per round trip. Not a pool proxy: the
        # pool takes a proxy back by itself when its connection dies, and a proxy used after
        # that raises "connection has been released back to the pool" forever.
        self._held: dict[str, asyncpg.Connection] = {}
        self._commits: Batcher[_Commit, Written | None] = Batcher(
            self._flush_commits, is_fatal=_is_fatal
        )
        self._inserts: Batcher[_Insert, bool] = Batcher(self._flush_inserts, is_fatal=_is_fatal)

    async def pool(self) -> asyncpg.Pool:
        """The pool, created on first use (and again after a failed creation)."""
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                # No connection floor (min_size=0): asyncpg would otherwise reconnect it in
                # the background while the server is down, logging a traceback each time.
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=self._max_size,
                    timeout=CONNECT_TIMEOUT,
                    server_settings=SERVER_SETTINGS,
                    reset=_keep_session,
                )
        return self._pool

    async def _fetch_held(self, name: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run ``sql`` on the connection held for ``name`` (a batcher's), reconnecting as needed."""
        conn = self._held.get(name)
        if conn is None or conn.is_closed():
            conn = self._held[name] = await asyncpg.connect(
                self._dsn, timeout=CONNECT_TIMEOUT, server_settings=SERVER_SETTINGS
            )
        try:
            return list(await conn.fetch(sql, *args))
        except asyncpg.PostgresError as error:
            if driver_error_unavailable(error):
                self._drop(name, conn)
            raise  # otherwise the statement failed and the connection is fine
        except BaseException:
            # Connection trouble or cancellation mid-statement: never reuse this connection.
            self._drop(name, conn)
            raise

    def _drop(self, name: str, conn: asyncpg.Connection) -> None:
        if self._held.get(name) is conn:
            del self._held[name]
        conn.terminate()

    async def close(self) -> None:
        """Finish queued writes and close the pool."""
        await self._commits.close()
        await self._inserts.close()
        held, self._held = list(self._held.values()), {}
        for conn in held:
            try:
                await conn.close(timeout=2)
            except Exception:  # already broken: nothing to close gracefully
                conn.terminate()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def idle(self) -> bool:
        """Whether no progress write or start is being sent or waiting to be."""
        return self._commits.idle and self._inserts.idle

    # -- progress -----------------------------------------------------------------------

    async def commit(
        self, run_id: str, epoch: int, progress: Progress, seq: int | None = None
    ) -> Written | None:
        """Commit progress with the next group; None if fenced off (epoch or ``seq``)."""
        # The lease end is stamped at flush time (see _flush_commits).
        try:
            return await self._commits.submit((run_id, epoch, progress, seq))
        except Exception as error:
            _unavailable(error, "progress write")
            raise

    async def _flush_commits(self, items: Sequence[_Commit]) -> list[Written | None]:
        statement = _progress_statement(items, self._clock.now() + self._lease)
        return _in_order(await self._fetch_held("commits", *statement), items)

    # -- starts -------------------------------------------------------------------------

    async def insert(self, values: Mapping[str, Any], detail: dict[str, Any], notify: bool) -> bool:
        """Insert a run with the next group; False when its idempotency key exists."""
        try:
            return await self._inserts.submit((values, detail, notify))
        except Exception as error:
            _unavailable(error, "start")
            raise

    async def _flush_inserts(self, items: Sequence[_Insert]) -> list[bool]:
        if len(items) == 1:
            rows = await self._fetch_held("inserts", INSERT_ONE_SQL, *insert_args(*items[0]))
        else:
            batch = json.dumps([insert_item(*item) for item in items])
            rows = await self._fetch_held("inserts", INSERT_SQL, batch)
        inserted = {r["id"] for r in rows}
        return [values["id"] in inserted for values, _detail, _notify in items]

    # -- claims, leases, reads ----------------------------------------------------------

    async def claim(self, request: ClaimRequest) -> list[tuple[SagaRun, str | None]]:
        """Lease due runs with ``FOR UPDATE SKIP LOCKED``; records takeovers.

        Leases that expired before the request's ``before`` are taken over; runs this worker
        claimed at one of its ``lost_claims`` (claims whose answer was lost) are claimed again
        as if fresh.
        """
        r = request
        names, versions = type_arrays(r.saga_types)
        try:
            pool = await self.pool()
            async with pool.acquire() as conn:
                until = self._clock.now() + self._lease
                rows = await conn.fetch(
                    CLAIM_SQL,
                    names,
                    r.now,
                    r.own,
                    r.limit,
                    r.worker_id,
                    until,
                    list(r.exclude),
                    r.before,
                    list(r.lost_claims),
                    versions,
                )
        except Exception as error:
            _unavailable(error, "claim")
            raise
        return [(run_from_record(r), r["previous_owner"]) for r in rows]

    async def heartbeat(
        self, worker_id: str, run_ids: Sequence[str]
    ) -> dict[str, tuple[int, bool]]:
        """Extend leases still held; returns epoch and cancel flag per held run."""
        try:
            pool = await self.pool()
            async with pool.acquire() as conn:
                until = self._clock.now() + self._lease
                rows = await conn.fetch(HEARTBEAT_SQL, worker_id, list(run_ids), until)
        except Exception as error:
            _unavailable(error, "lease renewal")
            raise
        return {r["id"]: (r["epoch"], bool(r["cancel_requested"])) for r in rows}

    async def get(self, run_id: str) -> SagaRun | None:
        """One run by id."""
        return await self._fetch_run(GET_SQL, run_id)

    async def find(self, saga_type: str, idempotency_key: str) -> SagaRun | None:
        """The run of ``saga_type`` started with ``idempotency_key``."""
        return await self._fetch_run(FIND_SQL, saga_type, idempotency_key)

    async def _fetch_run(self, sql: str, *args: Any) -> SagaRun | None:
        try:
            pool = await self.pool()
            row = await pool.fetchrow(sql, *args)
        except Exception as error:
            _unavailable(error, "read")
            raise
        return run_from_record(row) if row is not None else None
