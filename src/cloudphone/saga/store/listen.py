"""LISTEN/NOTIFY on PostgreSQL: wakes idle workers when new runs are inserted.

The connection is replaced whenever it drops (a restarting server terminates it), with capped
backoff, logging the loss once and the recovery once. Notifications sent while it was down are
lost, so every (re)connection calls ``on_connect``: the worker looks for due work then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import URL

from cloudphone.saga.outage import Backoff
from cloudphone.saga.store.disconnects import CONNECT_TIMEOUT

log = logging.getLogger("cloudphone.saga")

RECONNECT_BACKOFF = (0.05, 2.0)
"""First and largest delay (seconds) between reconnection attempts."""


class Listener:
    """Keeps one dedicated connection LISTENing on a channel; reconnects when it drops.

    Args:
        url: The database URL (asyncpg or psycopg driver).
        channel: Channel name.
        on_notify: Called with each notification's payload.
        on_connect: Called each time the connection is (re)established and listening.
        on_lost: Called with the error when the connection is lost (once per loss).
    """

    def __init__(
        self,
        url: URL,
        channel: str,
        on_notify: Callable[[str], None],
        *,
        on_connect: Callable[[], None] | None = None,
        on_lost: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._driver = url.get_driver_name()
        self._channel = channel
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(*RECONNECT_BACKOFF)
        self._lost_at: float | None = None
        self.connected = asyncio.Event()
        """Set while the connection is listening."""

    def start(self) -> None:
        """Start listening in the background."""
        self._task = asyncio.create_task(self._run(), name="saga-listener")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                if self._driver == "asyncpg":
                    await self._listen_asyncpg()
                else:
                    await self._listen_psycopg()
                raise ConnectionError("the LISTEN connection ended")
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._lost(error)
            # Reconnecting to a database that is down: nothing to wait on but time.
            await asyncio.sleep(self._backoff.next())

    def _lost(self, error: BaseException) -> None:
        self.connected.clear()
        if self._lost_at is not None:
            return  # already reported; the recovery is logged when it comes
        self._lost_at = time.monotonic()
        log.warning(
            "LISTEN connection lost (%s: %s); polling until it is back", type(error).__name__, error
        )
        if self._on_lost is not None:
            self._on_lost(error)

    def _listening(self) -> None:
        self.connected.set()
        self._backoff.reset()
        if self._lost_at is not None:
            log.info("LISTEN connection back after %.1f s", time.monotonic() - self._lost_at)
            self._lost_at = None
        if self._on_connect is not None:
            self._on_connect()

    async def _listen_asyncpg(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
        lost = asyncio.Event()

        def notified(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            self._on_notify(payload)

        conn.add_termination_listener(lambda _c: lost.set())
        try:
            await conn.add_listener(self._channel, notified)
            self._listening()
            await lost.wait()
            raise ConnectionError("listener connection terminated")
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _listen_psycopg(self) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
        ) as conn:
            await conn.execute(f'LISTEN "{self._channel}"')
            self._listening()
            async for note in conn.notifies():
                self._on_notify(note.payload)
