"""The engine's own CPU per saga, on the in-memory store: the Python side of the hot path.

No database, so the number does not move with the machine's load the way ``bench/engine.py``
does: N sagas of 4 no-op steps (like ``bench/engine.py``'s, none transactional) are started on
a ``MemoryEngine`` and driven to completion; the process CPU time over that, divided by N.

    python bench/engine_memory.py --sagas 3000
    python bench/engine_memory.py --sagas 3000 --input-kb 16
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from cloudphone.saga import Saga, StepContext
from cloudphone.saga.testing import MemoryEngine


def build_saga() -> Saga:
    saga = Saga("bench_memory")

    @saga.step("RESERVE")
    async def reserve(ctx: StepContext) -> dict[str, Any]:
        return {"reserved": True}

    @saga.step("CALL")
    async def call(ctx: StepContext) -> dict[str, Any]:
        return {"called": ctx.idempotency_key}

    @saga.step("RECORD")
    async def record(ctx: StepContext) -> None:
        return None

    @saga.step("NOTIFY")
    async def notify(ctx: StepContext) -> None:
        return None

    return saga


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sagas", type=int, default=3000)
    parser.add_argument("--input-kb", type=int, default=0, help="pad each input with KiB")
    args = parser.parse_args()
    engine = MemoryEngine([build_saga()])
    pad = "x" * (args.input_kb * 1024)
    async with engine.worker(concurrency=64):
        await engine.settle()
        started = time.process_time()
        ids = [await engine.start("bench_memory", {"i": i, "pad": pad}) for i in range(args.sagas)]
        await engine.settle()
        cpu = time.process_time() - started
    done = [await engine.get(saga_id) for saga_id in ids]
    assert all(run.status.value == "COMPLETED" for run in done)
    print(
        f"sagas={args.sagas} input_kb={args.input_kb}: CPU {cpu / args.sagas * 1e6:.0f} us per saga"
    )


if __name__ == "__main__":
    asyncio.run(main())
