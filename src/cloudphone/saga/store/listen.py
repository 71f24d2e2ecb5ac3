"""LISTEN/NOTIFY on PostgreSQL: wakes idle workers when new runs are inserted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import URL

log = logging.getLogger("cloudphone.saga")


class Listener:
    """Keeps one dedicated connection LISTENing on a channel; reconnects when it drops.

    Args:
        url: The database URL (asyncpg or psycopg driver).
        channel: Channel name.
        on_notify: Called with each notification's payload.
    """

    def __init__(self, url: URL, channel: str, on_notify: Callable[[str], None]) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._driver = url.get_driver_name()
        self._channel = channel
        self._on_notify = on_notify
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

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
        delay = 0.1
        while True:
            try:
                if self._driver == "asyncpg":
                    await self._listen_asyncpg()
                else:
                    await self._listen_psycopg()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.connected.clear()
                log.warning("LISTEN connection lost (%s); polling until it is back", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _listen_asyncpg(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._dsn)
        lost = asyncio.Event()

        def notified(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            self._on_notify(payload)

        conn.add_termination_listener(lambda _c: lost.set())
        try:
            await conn.add_listener(self._channel, notified)
            self.connected.set()
            await lost.wait()
            raise ConnectionError("listener connection terminated")
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _listen_psycopg(self) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as conn:
            await conn.execute(f'LISTEN "{self._channel}"')
            self.connected.set()
            async for note in conn.notifies():
                self._on_notify(note.payload)
