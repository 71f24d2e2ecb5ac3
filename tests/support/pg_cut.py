"""A TCP proxy to PostgreSQL that loses the answer of one statement after it committed.

The fault a unit cannot cause: the server ran (and committed) a statement, and the client
never hears back. The proxy reads the wire protocol's messages: once the client prepared a
statement whose text holds ``marker`` and executed it, the server's answer is dropped at its
ReadyForQuery (sent after the implicit transaction committed) and both sides are closed.
Once only; every other byte is passed through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

_UNTYPED_REQUESTS = (80877103, 80877104)
"""SSLRequest and GSSENCRequest: followed by one byte of answer, then the startup again."""


@dataclass
class AnswerCut:
    """The proxy's port, and whether it has cut the marked statement's answer."""

    marker: bytes
    port: int = 0
    done: bool = False
    armed_statements: set[bytes] = field(default_factory=set)


class _Link:
    """One client connection and its server connection."""

    def __init__(self, cut: AnswerCut, client: asyncio.StreamWriter, server: asyncio.StreamWriter):
        self.cut = cut
        self.client = client
        self.server = server
        self.untyped: asyncio.Queue[bool] = asyncio.Queue()
        """Per untyped request sent, True (a one-byte answer follows); False once started."""
        self.executing = False
        """The marked statement was bound and executed: drop the answer at ReadyForQuery."""

    async def client_to_server(self, reader: asyncio.StreamReader) -> None:
        while True:  # the untyped start: SSL/GSS requests, then the startup message
            head = await reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            self.server.write(head + await reader.readexactly(length - 8))
            request = code in _UNTYPED_REQUESTS
            self.untyped.put_nowait(request)
            if not request:
                break
        while True:
            kind, body = await _message(reader)
            self._watch_client(kind, body)
            self.server.write(kind + struct.pack("!i", len(body) + 4) + body)

    def _watch_client(self, kind: bytes, body: bytes) -> None:
        cut = self.cut
        if cut.done:
            return
        if kind == b"P" and cut.marker in body:
            cut.armed_statements.add(body.split(b"\0", 1)[0])
        elif kind == b"B":
            statement = body.split(b"\0", 2)[1]
            self.executing = self.executing or statement in cut.armed_statements

    async def server_to_client(self, reader: asyncio.StreamReader) -> None:
        while await self.untyped.get():
            answer = await reader.readexactly(1)
            if answer != b"N":
                raise RuntimeError(f"the server accepted encryption ({answer!r}): cannot watch")
            self.client.write(answer)
        while True:
            kind, body = await _message(reader)
            if kind == b"Z" and self.executing and not self.cut.done:
                self.cut.done = True  # committed: its answer is lost with the connection
                self.server.close()
                self.client.close()
                return
            self.client.write(kind + struct.pack("!i", len(body) + 4) + body)


async def _message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    kind = await reader.readexactly(1)
    (length,) = struct.unpack("!i", await reader.readexactly(4))
    return kind, await reader.readexactly(length - 4)


@asynccontextmanager
async def losing_one_answer(host: str, port: int, marker: str) -> AsyncIterator[AnswerCut]:
    """Serve the proxy on a free local port until the block ends."""
    cut = AnswerCut(marker.encode())
    tasks: set[asyncio.Task[None]] = set()

    async def serve(client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        server_reader, server = await asyncio.open_connection(host, port)
        link = _Link(cut, client, server)
        pumps = [
            asyncio.create_task(link.client_to_server(client_reader)),
            asyncio.create_task(link.server_to_client(server_reader)),
        ]
        tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (client, server):
                writer.close()
            tasks.difference_update(pumps)

    proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        cut.port = proxy.sockets[0].getsockname()[1]
        yield cut
    finally:
        proxy.close()
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await proxy.wait_closed()
