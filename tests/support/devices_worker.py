r"""A worker process running the device sagas, for chaos tests to SIGKILL; and its spawner.

Child usage::

    python -m tests.support.devices_worker --url URL --worker-id ID --runtime local|docker \\
        --config JSON [--state-dir DIR --instance ID] [--docker-url URL --image IMAGE] \\
        [--crash-after STEP]... [--crash-before STEP]... [--fail STEP]... [--hang STEP]...

It prints ``READY <worker-id> <pid>`` once its worker runs, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

READY = "READY"
REPO_ROOT = Path(__file__).resolve().parents[2]


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
    from cloudphone.saga import SagaEngine
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
    engine = SagaEngine(
        args.url,
        build_sagas(runtime, config),
        worker_id=args.worker_id,
        lease=timedelta(milliseconds=args.lease_ms),
        poll_interval=timedelta(milliseconds=50),
        hooks=faults,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with engine.worker(concurrency=8, grace=timedelta(seconds=5)):
            print(f"{READY} {args.worker_id} {os.getpid()}", flush=True)
            await stop.wait()
    finally:
        await engine.close()
        await runtime.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {args.worker_id} %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(args))
    return 0


@dataclass
class DeviceWorker:
    """One worker child."""

    worker_id: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """The child's stderr tail."""
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until it printed READY (fails if it exits first)."""
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while READY.encode() not in line:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.worker_id} not ready:\n{self.log()}")
            line = self.popen.stdout.readline()
            if not line and self.popen.poll() is not None:
                raise AssertionError(f"{self.worker_id} exited early:\n{self.log()}")

    async def ready(self) -> None:
        """Wait off the event loop until it runs."""
        await asyncio.to_thread(self.wait_ready)

    async def exited(self, seconds: float = 30.0) -> int:
        """Wait off the event loop until it exits (an injected crash); its return code."""
        return await asyncio.to_thread(self.popen.wait, seconds)

    def kill(self) -> None:
        """SIGKILL it by pid and reap it."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


@dataclass
class DeviceWorkers:
    """Spawns device workers on one database and runtime; kills them all at the end."""

    url: str
    config: dict[str, Any]
    log_dir: Path
    runtime_args: list[str]
    started: list[DeviceWorker] = field(default_factory=list)

    def spawn(self, worker_id: str, **faults: Sequence[str]) -> DeviceWorker:
        """Start a child; ``faults`` maps crash_after, crash_before, fail, hang to step names."""
        argv = [
            sys.executable,
            "-m",
            "tests.support.devices_worker",
            "--url",
            self.url,
            "--worker-id",
            worker_id,
            "--config",
            json.dumps(self.config),
            *self.runtime_args,
        ]
        for kind, steps in faults.items():
            for step in steps:
                argv += [f"--{kind.replace('_', '-')}", step]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        log_path = self.log_dir / f"{worker_id}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        worker = DeviceWorker(worker_id, popen, log_path)
        self.started.append(worker)
        return worker

    async def start(self, worker_id: str, **faults: Sequence[str]) -> DeviceWorker:
        """Spawn and wait until it runs."""
        worker = self.spawn(worker_id, **faults)
        await worker.ready()
        return worker

    def close(self) -> None:
        """SIGKILL every child still running."""
        for worker in self.started:
            worker.kill()

    def logs(self) -> str:
        """Every child's stderr tail."""
        return "\n".join(f"--- {w.worker_id}\n{w.log()}" for w in self.started)


if __name__ == "__main__":
    sys.exit(main())
