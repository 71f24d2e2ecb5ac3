r"""An ``app_upload`` worker in its own process, for chaos tests to SIGKILL; and its spawner.

Child usage::

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
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from tests.support.processes import WorkerGroup, run_child, serve_worker


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
    await storage.start()
    try:
        await serve_worker(
            args.url,
            [saga],
            worker_id=args.worker_id,
            lease=timedelta(seconds=1),
            concurrency=4,
            hooks=faults,
        )
    finally:
        await storage.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return run_child(serve, parse_args(argv))


class AppsWorkers(WorkerGroup):
    """Spawns ``app_upload`` workers on one database and spool; kills them all at the end.

    :meth:`spawn` and :meth:`start` take the store's arguments (``--fs-root DIR`` or
    ``--s3-endpoint URL --s3-prefix P/``) as ``*args`` and the faults as options:
    ``crash_after``, ``crash_before_undo`` and ``fail`` map to step names; ``kill_after_part``
    to a part number.

    Args:
        log_dir: Where each child's stderr goes.
        url: Database URL the children use.
        saga_name: Name of the upload saga they run.
        spool: The upload spool they share with the test.
    """

    def __init__(self, log_dir: Path, url: str, saga_name: str, spool: Path) -> None:
        super().__init__(
            "tests.support.apps_worker",
            log_dir,
            ready_within=30.0,
            url=url,
            saga_name=saga_name,
            spool=str(spool),
        )


if __name__ == "__main__":
    sys.exit(main())
