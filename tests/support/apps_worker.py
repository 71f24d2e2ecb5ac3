r"""An ``app_upload`` worker in its own process, for chaos tests to SIGKILL.

Usage::

    python -m tests.support.apps_worker --url URL --worker-id ID --saga-name NAME \\
        --spool DIR (--fs-root DIR | --s3-endpoint URL --s3-prefix P/) \\
        [--crash-after STEP]... [--crash-before-undo STEP]... [--fail STEP]... \\
        [--kill-after-part N]

Prints ``READY <worker-id> <pid>`` once its worker runs. ``--crash-after`` SIGKILLs the process
after a step's action succeeded, before its commit; ``--crash-before-undo`` when a step's
compensation is about to run; ``--fail`` makes every attempt of a step fail;
``--kill-after-part N`` SIGKILLs it in the middle of a multipart upload, after part N was stored.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from tests.support.waiting import wait_sync

READY = "READY"
REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--saga-name", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--fs-root")
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--s3-prefix", default="")
    parser.add_argument("--crash-after", action="append", default=[])
    parser.add_argument("--crash-before-undo", action="append", default=[])
    parser.add_argument("--fail", action="append", default=[])
    parser.add_argument("--kill-after-part", type=int)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Run the worker until SIGTERM (or a SIGKILL, which is the point)."""
    from cloudphone.apps.spool import UploadSpool
    from cloudphone.apps.storage.base import ObjectStorage
    from cloudphone.apps.storage.filesystem import FilesystemStorage
    from cloudphone.apps.upload import build_upload_saga
    from cloudphone.saga import SagaEngine
    from cloudphone.saga.testing import FaultInjector
    from tests.support.apps_harness import FAST_RETRY
    from tests.support.apps_s3 import s3_storage

    async def kill_after_part(_key: str, number: int, _total: int) -> None:
        if number == args.kill_after_part:
            os.kill(os.getpid(), signal.SIGKILL)

    storage: ObjectStorage
    if args.s3_endpoint:
        hook = kill_after_part if args.kill_after_part else None
        storage = s3_storage(args.s3_endpoint, args.s3_prefix, on_part=hook, part_concurrency=1)
    else:
        storage = FilesystemStorage(Path(args.fs_root))
    faults = FaultInjector()
    for step in args.crash_after:
        faults.crash_after(step)
    for step in args.crash_before_undo:
        faults.crash_before(step, compensating=True)
    for step in args.fail:
        faults.fail(step, times=None)
    saga = build_upload_saga(
        storage, UploadSpool(Path(args.spool)), retry=FAST_RETRY, name=args.saga_name
    )
    engine = SagaEngine(
        args.url,
        [saga],
        worker_id=args.worker_id,
        lease=timedelta(seconds=1),
        poll_interval=timedelta(milliseconds=50),
        hooks=faults,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await storage.start()
    try:
        async with engine.worker(concurrency=4, grace=timedelta(seconds=5)):
            print(f"{READY} {args.worker_id} {os.getpid()}", flush=True)
            await stop.wait()
    finally:
        await engine.close()
        await storage.close()


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


@dataclass
class AppsWorker:
    """A running ``apps_worker`` child."""

    popen: subprocess.Popen[str]
    log_path: Path

    @classmethod
    def spawn(cls, log_path: Path, *args: str) -> AppsWorker:
        """Start a child with these arguments and wait until its worker runs."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with log_path.open("a") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "tests.support.apps_worker", *args],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        worker = cls(popen, log_path)
        assert popen.stdout is not None
        line = popen.stdout.readline()  # blocks until READY or exit
        if not line.startswith(READY):
            worker.kill()
            raise AssertionError(f"apps worker did not start:\n{worker.log()}")
        return worker

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the child to die on its own (an injected crash); returns its exit code."""
        wait_sync(lambda: self.popen.poll() is not None, timeout=timeout, what="worker crash")
        return self.popen.wait()

    def kill(self) -> None:
        """SIGKILL by pid (if still running) and reap."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        if self.popen.stdout is not None:
            self.popen.stdout.close()

    def log(self) -> str:
        """The child's stderr."""
        return self.log_path.read_text(errors="replace")[-4000:]


if __name__ == "__main__":
    sys.exit(main())
