r"""A saga worker in its own process, for chaos tests to SIGKILL.

Usage::

    python -m tests.support.worker_proc --url URL --worker-id ID --saga-name NAME \\
        [--lease-ms N] [--concurrency N] [--crash-after STEP]...

Runs the chaos saga (:func:`tests.support.chaos.build_chaos_saga`) until SIGTERM (graceful
stop) or SIGKILL, and prints ``READY <worker-id> <pid>`` on stdout once its worker has started,
i.e. after the worker's reclaim round.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta

READY = "READY"
"""First word of the line printed when the worker runs."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="database URL")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--saga-name", required=True, help="name of the chaos saga to run")
    parser.add_argument("--lease-ms", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--crash-after",
        action="append",
        default=[],
        metavar="STEP",
        help="SIGKILL this process after STEP's first action, before its commit",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Run the worker until SIGTERM or SIGINT."""
    # Imported here so ``--help`` and the READY constant need no database libraries.
    from cloudphone.saga import SagaEngine
    from cloudphone.saga.testing import FaultInjector
    from tests.support.chaos import build_chaos_saga

    faults = FaultInjector()
    for step in args.crash_after:
        faults.crash_after(step)
    engine = SagaEngine(
        args.url,
        [build_chaos_saga(args.saga_name, args.worker_id)],
        worker_id=args.worker_id,
        lease=timedelta(milliseconds=args.lease_ms),
        poll_interval=timedelta(milliseconds=50),
        hooks=faults if args.crash_after else None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with engine.worker(concurrency=args.concurrency, grace=timedelta(seconds=5)):
            print(f"{READY} {args.worker_id} {os.getpid()}", flush=True)
            await stop.wait()
    finally:
        await engine.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {args.worker_id} %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
