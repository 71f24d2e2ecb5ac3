"""Group commit: many concurrent writers, one statement per round trip.

The first writer to arrive while no flush is running flushes at once, inline (alone it pays no
extra hop); writers arriving during a flush queue up and go out together in the next one, which
a background task sends, so under load each round trip carries many items. With a ``gate``
(SQLite's writer lock) a batch is taken once the gate is open, so the writers that queued
while it was shut go out together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Queues items and flushes them in batches with one ``flush`` call at a time.

    Args:
        flush: Writes a batch; returns one result per item, in order. If it raises, each item
            of a multi-item batch is flushed alone so one bad item cannot fail the others
            (unless ``is_fatal`` says the error concerns the connection, not the data).
        is_fatal: Errors that fail the whole batch without retrying items one by one.
        max_batch: Largest batch sent in one call.
        gate: Entered around taking and writing each batch (a single-item retry included),
            so what queued while it was shut goes out together.
    """

    def __init__(
        self,
        flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        is_fatal: Callable[[BaseException], bool] = lambda _error: True,
        max_batch: int = 500,
        gate: Callable[[], AbstractAsyncContextManager[object]] | None = None,
    ) -> None:
        self._flush = flush
        self._gate = gate
        self._is_fatal = is_fatal
        self._max = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._busy = False
        self._task: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        """Whether nothing is being flushed or waiting to be."""
        return not self._busy and not self._queue

    async def submit(self, item: T) -> R:
        """Write ``item`` with the next batch and return its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if not self._busy:
            # Nobody is flushing: send this item (and anything queued) now, from this task.
            self._busy = True
            try:
                await self._send()
            finally:
                self._busy = False
                if self._queue:
                    self._hand_over()
        # A writer cancelled while waiting cancels only its future: the batch still writes
        # the item (it may already be on the wire) and its result is dropped.
        return await future

    async def _send(self) -> None:
        """Take the next batch (once the gate is open) and write it."""
        if self._gate is None:
            await self._write(self._take())
            return
        async with self._gate():
            batch = self._take()
            if batch:
                await self._write(batch)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch, self._queue = self._queue[: self._max], self._queue[self._max :]
        return batch

    def _hand_over(self) -> None:
        """Let a background task flush the items that queued up during our flush."""
        self._busy = True
        self._task = asyncio.create_task(self._drain(), name="saga-group-commit")

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._send()
        finally:
            self._busy = False
            if self._queue:  # pragma: no cover - items added while the last write finished
                self._hand_over()

    async def _write(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
        except asyncio.CancelledError:
            # The flushing writer was cancelled mid-write: the others' outcome is unknown.
            lost = ConnectionError("the group commit carrying this write was interrupted")
            for _, future in batch:
                _settle(future, error=lost)
            raise
        except Exception as error:
            if len(batch) == 1 or self._is_fatal(error):
                for _, future in batch:
                    _settle(future, error=error)
                return
            for single in batch:
                await self._write([single])
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)

    async def close(self) -> None:
        """Wait for queued writes to finish."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def _settle(
    future: asyncio.Future[R], *, result: R | None = None, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
