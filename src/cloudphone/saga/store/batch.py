"""Group commit: many concurrent writers, one statement per round trip.

Items submitted while a flush is in flight wait for the next one, so under load each round
trip carries many items; alone, an item is flushed at once (no added latency).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
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
    """

    def __init__(
        self,
        flush: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        is_fatal: Callable[[BaseException], bool] = lambda _error: True,
        max_batch: int = 500,
    ) -> None:
        self._flush = flush
        self._is_fatal = is_fatal
        self._max = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Write ``item`` with the next batch and return its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="saga-group-commit")
        # A writer cancelled while waiting cancels only its future: the batch still writes
        # the item (it may already be on the wire) and its result is dropped.
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            await self._write(batch)

    async def _write(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
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
