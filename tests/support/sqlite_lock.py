"""Another process holding a SQLite file's write lock, as a CLI command in a transaction does."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


class LockHolder:
    """A child process inside ``BEGIN IMMEDIATE`` on a SQLite file until :meth:`release`."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.released = False

    async def release(self) -> None:
        """Commit the child's transaction (the lock is free once this returns)."""
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(b"\n")
        await self._process.stdin.drain()
        line = await asyncio.wait_for(self._process.stdout.readline(), 10)
        assert line.strip() == b"released", line
        self.released = True


@asynccontextmanager
async def write_lock_held(path: Path) -> AsyncIterator[LockHolder]:
    """Hold ``path``'s write lock in a child process while the block runs (or until released)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOLDER,
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    holder = LockHolder(process)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 10)
        assert line.strip() == b"locked", line
        yield holder
        if not holder.released:
            await holder.release()
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
