r"""A platform worker process for install chaos tests to SIGKILL; and its spawner.

Child usage::

    python -m tests.support.installs_worker --worker-id ID --url URL --data-dir DIR \\
        [--crash-after STEP]... [--crash-before STEP]... [--fail STEP]...

It builds the whole platform from the same settings as the test's (``install_settings``) with
fault injection on the ``app_install`` saga, prints ``READY <worker-id> <pid>`` once its
worker runs, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.support.processes import READY, WorkerGroup, run_child


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the child's command line."""
    parser = argparse.ArgumentParser(description="install saga worker for chaos tests")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--data-dir", required=True)
    for flag in ("--crash-after", "--crash-before", "--fail"):
        parser.add_argument(flag, action="append", default=[], metavar="STEP")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Run the platform's worker until SIGTERM."""
    from cloudphone.platform import build_platform
    from cloudphone.saga.testing import FaultInjector
    from tests.support.installs_stack import install_settings

    faults = FaultInjector()
    for step in args.crash_after:
        faults.crash_after(step, saga="app_install")
    for step in args.crash_before:
        faults.crash_before(step, saga="app_install")
    for step in args.fail:
        faults.fail(step, times=None, saga="app_install")
    settings = install_settings(args.url, Path(args.data_dir), args.worker_id)
    platform = build_platform(settings, with_worker=True, hooks=faults)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with platform:
        print(f"{READY} {args.worker_id} {os.getpid()}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point."""
    return run_child(serve, parse_args(argv))


class InstallWorkers(WorkerGroup):
    """Spawns platform workers on one database and data directory; kills them all at the end."""

    def __init__(self, url: str, data_dir: Path, log_dir: Path) -> None:
        super().__init__(
            "tests.support.installs_worker",
            log_dir,
            ready_within=60.0,
            url=url,
            data_dir=str(data_dir),
        )


if __name__ == "__main__":
    sys.exit(main())
