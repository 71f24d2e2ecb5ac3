r"""A worker process that drives chosen versions of one saga: one deploy of a rolling upgrade.

Child usage::

    python -m tests.support.versions_worker --url URL --worker-id ID --saga-name NAME \\
        --versions 1 [--versions 2 ...] [--lease-ms N] [--concurrency N]

Each version's steps are :data:`VERSION_STEPS`; every step returns which version ran it (see
:func:`tests.support.sagas.build_versioned`). Prints ``READY <worker-id> <pid>`` once its
worker runs; stops gracefully on SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from tests.support.processes import WorkerGroup, run_child, serve_worker

VERSION_STEPS: dict[int, tuple[str, ...]] = {
    1: ("RESERVE", "CHARGE", "SHIP"),
    2: ("RESERVE", "CHARGE", "PACK", "SHIP"),
    3: ("RESERVE", "SHIP"),
}
"""The steps of each version of the upgrade saga (v2 adds PACK; v3 is a later rewrite)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="database URL")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--saga-name", required=True)
    parser.add_argument(
        "--versions", type=int, action="append", required=True, choices=sorted(VERSION_STEPS)
    )
    parser.add_argument("--lease-ms", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Run the worker until SIGTERM or SIGINT."""
    from tests.support.sagas import build_versioned

    sagas = [build_versioned(args.saga_name, v, VERSION_STEPS[v]) for v in args.versions]
    await serve_worker(
        args.url,
        sagas,
        worker_id=args.worker_id,
        lease=timedelta(milliseconds=args.lease_ms),
        concurrency=args.concurrency,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return run_child(serve, parse_args(argv))


class VersionedWorkers(WorkerGroup):
    """Spawns upgrade-saga workers; :meth:`start` takes ``versions=["1", "2"]`` per child.

    Args:
        url: Database URL the children use.
        saga_name: The saga's name.
        log_dir: Where each child's stderr goes.
        lease_ms: Lease of the children.
        concurrency: Runs each child drives at once.
    """

    def __init__(
        self, url: str, saga_name: str, log_dir: Path, *, lease_ms: int = 1000, concurrency: int = 2
    ) -> None:
        super().__init__(
            "tests.support.versions_worker",
            log_dir,
            url=url,
            saga_name=saga_name,
            lease_ms=lease_ms,
            concurrency=concurrency,
        )


if __name__ == "__main__":
    sys.exit(main())
