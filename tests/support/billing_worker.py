"""A refund-saga worker in its own process, for crash tests to SIGKILL; and its spawner.

Child usage::

    python -m tests.support.billing_worker --url URL --worker-id ID --saga-name NAME
        [--stripe-base URL] [--sandbox-ignore-idempotency] [--crash-after STEP]

Wires billing like the platform does (sandbox always; Stripe when ``--stripe-base`` is given,
with the localstripe test key), with the fast test timings, and prints ``READY <id> <pid>`` once
its worker runs. ``--crash-after STEP`` SIGKILLs the process after STEP's action succeeded,
before the engine records it.
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
    from cloudphone.saga import Database
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
    try:
        await serve_worker(
            db,
            [saga],
            worker_id=args.worker_id,
            lease=timedelta(milliseconds=args.lease_ms),
            concurrency=4,
            hooks=injector,
        )
    finally:
        for provider in providers.values():
            await provider.close()
        await db.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_child(serve, parse_args(argv))


class BillingWorkers(WorkerGroup):
    """Spawns refund-saga workers on one database; kills them all at the end.

    :meth:`spawn` and :meth:`start` take ``crash_after`` (step names) and ``lease_ms``.

    Args:
        log_dir: Where each child's stderr goes.
        url: Database URL the children use.
        saga_name: Name of the refund saga they run.
        stripe_base: localstripe's base URL, to wire the Stripe provider too.
        sandbox_ignore_idempotency: Make the sandbox provider ignore idempotency keys.
    """

    def __init__(
        self,
        log_dir: Path,
        url: str,
        saga_name: str,
        *,
        stripe_base: str | None = None,
        sandbox_ignore_idempotency: bool = False,
    ) -> None:
        super().__init__(
            "tests.support.billing_worker",
            log_dir,
            url=url,
            saga_name=saga_name,
            stripe_base=stripe_base,
            sandbox_ignore_idempotency=sandbox_ignore_idempotency,
        )


if __name__ == "__main__":
    sys.exit(main())
