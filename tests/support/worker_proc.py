r"""A saga worker in its own process, for chaos tests to SIGKILL; and its spawner.

Child usage::

    python -m tests.support.worker_proc --url URL --worker-id ID --saga-name NAME \\
        [--lease-ms N] [--concurrency N] [--crash-after STEP]...

Runs the chaos saga (:func:`tests.support.chaos.build_chaos_saga`) until SIGTERM (graceful
stop) or SIGKILL, and prints ``READY <worker-id> <pid>`` on stdout once its worker has started,
i.e. after the worker's reclaim round.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from tests.support.processes import WorkerGroup, run_child, serve_worker


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
    # Imported here so ``--help`` needs no database libraries.
    from cloudphone.saga.testing import FaultInjector
    from tests.support.chaos import build_chaos_saga

    faults = FaultInjector()
    for step in args.crash_after:
        faults.crash_after(step)
    await serve_worker(
        args.url,
        [build_chaos_saga(args.saga_name, args.worker_id)],
        worker_id=args.worker_id,
        lease=timedelta(milliseconds=args.lease_ms),
        concurrency=args.concurrency,
        hooks=faults if args.crash_after else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return run_child(serve, parse_args(argv))


class WorkerPool(WorkerGroup):
    """Spawns chaos-saga workers on one database and one saga name; kills them all at the end.

    :meth:`spawn` and :meth:`start` take ``lease_ms``, ``concurrency`` and ``crash_after``
    (step names) to override the pool's options for one child.

    Args:
        url: Database URL the children use.
        saga_name: Name of the chaos saga they run (see :mod:`tests.support.chaos`).
        log_dir: Where each child's stderr goes.
        lease_ms: Default lease of the children.
        concurrency: Default number of runs each child drives at once.
    """

    def __init__(
        self, url: str, saga_name: str, log_dir: Path, *, lease_ms: int = 1000, concurrency: int = 4
    ) -> None:
        super().__init__(
            "tests.support.worker_proc",
            log_dir,
            url=url,
            saga_name=saga_name,
            lease_ms=lease_ms,
            concurrency=concurrency,
        )
        self.saga_name = saga_name


if __name__ == "__main__":
    sys.exit(main())
