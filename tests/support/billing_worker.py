"""A refund-saga worker in its own process, for crash tests to SIGKILL.

Usage::

    python -m tests.support.billing_worker --url URL --worker-id ID --saga-name NAME
        [--stripe-base URL] [--sandbox-ignore-idempotency] [--crash-after STEP]

Wires billing like the platform does (sandbox always; Stripe when ``--stripe-base`` is given,
with the localstripe test key), with the fast test timings, and prints ``READY <id> <pid>`` once
its worker runs. ``--crash-after STEP`` SIGKILLs the process after STEP's action succeeded,
before the engine records it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

READY = "READY"
REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--saga-name", required=True)
    parser.add_argument("--stripe-base")
    parser.add_argument("--sandbox-ignore-idempotency", action="store_true")
    parser.add_argument("--crash-after", action="append", default=[], metavar="STEP")
    parser.add_argument("--lease-ms", type=int, default=1000)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Run the worker until SIGTERM."""
    from cloudphone.billing.config import SandboxConfig
    from cloudphone.billing.providers.base import PaymentProvider
    from cloudphone.billing.providers.sandbox import SandboxProvider
    from cloudphone.billing.providers.stripe import StripeProvider
    from cloudphone.billing.refund import build_refund_saga
    from cloudphone.saga import Database, SagaEngine
    from cloudphone.saga.testing import FaultInjector
    from tests.support.billing_harness import FAST_TIMING
    from tests.support.billing_localstripe import LocalStripe

    db = Database(args.url)
    faults = SandboxConfig(ignore_idempotency_key=args.sandbox_ignore_idempotency)
    providers: dict[str, PaymentProvider] = {"sandbox": SandboxProvider(db, faults)}
    if args.stripe_base:
        port = int(args.stripe_base.rsplit(":", 1)[1])
        providers["stripe"] = StripeProvider(LocalStripe(port=port).config())
    injector = FaultInjector()
    for step in args.crash_after:
        injector.crash_after(step)
    saga = build_refund_saga(providers, db, timing=FAST_TIMING, name=args.saga_name)
    engine = SagaEngine(
        db,
        [saga],
        worker_id=args.worker_id,
        lease=timedelta(milliseconds=args.lease_ms),
        poll_interval=timedelta(milliseconds=50),
        hooks=injector,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with engine.worker(concurrency=4, grace=timedelta(seconds=5)):
            print(f"{READY} {args.worker_id} {os.getpid()}", flush=True)
            await stop.wait()
    finally:
        for provider in providers.values():
            await provider.close()
        await db.dispose()


@dataclass
class BillingWorker:
    """A spawned worker child; stopped by pid."""

    worker_id: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def spawn(cls, log_dir: Path, worker_id: str, *args: str) -> BillingWorker:
        """Start ``python -m tests.support.billing_worker --worker-id ID ARGS…``."""
        argv = [sys.executable, "-m", "tests.support.billing_worker", "--worker-id", worker_id]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        log_path = log_dir / f"billing-worker-{worker_id}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [*argv, *args],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        return cls(worker_id, popen, log_path)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until the READY line (fail with the log if the child dies or is late)."""
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while READY.encode() not in line:
            if time.monotonic() > deadline or self.popen.poll() is not None:
                raise AssertionError(f"worker {self.worker_id} not ready:\n{self.log()}")
            line = self.popen.stdout.readline()

    def log(self) -> str:
        """The child's stderr, tail."""
        return self.log_path.read_text(errors="replace")[-3000:]

    def wait_exit(self, timeout: float) -> int:
        """Wait for the child to exit by itself; returns its code."""
        return self.popen.wait(timeout=timeout)

    def close(self) -> None:
        """SIGKILL by pid if still running; reap; close the pipe."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
