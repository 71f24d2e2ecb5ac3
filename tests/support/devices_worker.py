r"""A worker process running the device sagas, for chaos tests to SIGKILL; and its spawner.

Child usage::

    python -m tests.support.devices_worker --url URL --worker-id ID --runtime local|docker \\
        --config JSON [--state-dir DIR --instance ID] [--docker-url URL --image IMAGE] \\
        [--crash-after STEP]... [--crash-before STEP]... [--fail STEP]... [--hang STEP]...

It prints ``READY <worker-id> <pid>`` once its worker runs, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.support.processes import WorkerGroup, run_child, serve_worker


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the child's command line."""
    parser = argparse.ArgumentParser(description="device saga worker for chaos tests")
    parser.add_argument("--url", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--runtime", choices=["local", "docker"], default="local")
    parser.add_argument("--config", default="{}", help="DevicesConfig fields as JSON")
    parser.add_argument("--state-dir", help="local runtime state directory")
    parser.add_argument("--instance", help="runtime instance id")
    parser.add_argument("--docker-url")
    parser.add_argument("--image")
    parser.add_argument("--lease-ms", type=int, default=1000)
    for flag in ("--crash-after", "--crash-before", "--fail", "--hang"):
        parser.add_argument(flag, action="append", default=[], metavar="STEP")
    return parser.parse_args(argv)


def _runtime(args: argparse.Namespace) -> Any:
    from cloudphone.devices.runtimes.docker import DockerRuntime
    from cloudphone.devices.runtimes.local import LocalRuntime

    if args.runtime == "local":
        return LocalRuntime(Path(args.state_dir), instance=args.instance, stop_timeout=3.0)
    return DockerRuntime(docker_options(args.docker_url, args.image, args.instance))


def docker_options(url: str, image: str, instance: str) -> Any:
    """Docker runtime options for the busybox fake-device image on a host network."""
    from cloudphone.devices.runtimes.docker import DockerOptions

    return DockerOptions(
        url=url,
        image=image,
        privileged=False,
        network_mode="host",
        protocol="line",
        pids_limit=64,
        stop_timeout=1,
        instance=instance,
    )


async def serve(args: argparse.Namespace) -> None:
    """Run the device sagas' worker until SIGTERM."""
    from cloudphone.devices.config import DevicesConfig
    from cloudphone.saga.testing import FaultInjector
    from tests.support.devices_stack import build_sagas

    faults = FaultInjector()
    for step in args.crash_after:
        faults.crash_after(step)
    for step in args.crash_before:
        faults.crash_before(step)
    for step in args.fail:
        faults.fail(step, times=None)
    for step in args.hang:
        faults.hang(step, times=None)
    runtime = _runtime(args)
    config = DevicesConfig(**json.loads(args.config))
    try:
        await serve_worker(
            args.url,
            build_sagas(runtime, config),
            worker_id=args.worker_id,
            lease=timedelta(milliseconds=args.lease_ms),
            concurrency=8,
            hooks=faults,
        )
    finally:
        await runtime.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point."""
    return run_child(serve, parse_args(argv))


class DeviceWorkers(WorkerGroup):
    """Spawns device workers on one database and runtime; kills them all at the end.

    :meth:`spawn` and :meth:`start` take the faults as options: ``crash_after``,
    ``crash_before``, ``fail``, ``hang`` map to step names.

    Args:
        url: Database URL the children use.
        config: ``DevicesConfig`` fields (as JSON types) the children use.
        log_dir: Where each child's stderr goes.
        **runtime: The runtime's options: ``runtime`` (``local`` or ``docker``), ``instance``,
            and ``state_dir`` or ``docker_url`` and ``image``.
    """

    def __init__(self, url: str, config: dict[str, Any], log_dir: Path, **runtime: str) -> None:
        super().__init__(
            "tests.support.devices_worker",
            log_dir,
            ready_within=30.0,
            url=url,
            config=json.dumps(config),
            **runtime,
        )


if __name__ == "__main__":
    sys.exit(main())
