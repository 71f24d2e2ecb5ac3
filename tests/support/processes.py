"""Worker child processes for chaos tests, both sides of them.

The parent side spawns ``python -m <module> --worker-id ID …`` from the repository root, waits
with a deadline for its ``READY <worker-id> <pid>`` line, SIGKILLs it by pid and reaps it. The
child side (:func:`serve_worker`, :func:`run_child`) runs a saga worker until SIGTERM or SIGINT
and prints that line once the worker runs. Each service's child module keeps only its own
arguments and wiring.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from cloudphone.saga import Database, Saga
    from cloudphone.saga.ports import StepHooks

READY = "READY"
"""First word of the line a child prints on stdout once its worker runs."""
REPO_ROOT = Path(__file__).resolve().parents[2]

Option: TypeAlias = str | int | bool | Sequence[str] | None
"""A command-line option's value: ``True`` is a bare flag, a sequence repeats the flag."""


def command_line(options: Mapping[str, Option]) -> list[str]:
    """``--some-name value`` for each ``some_name=value`` (``False`` or ``None`` leaves it out)."""
    argv: list[str] = []
    for name, value in options.items():
        flag = f"--{name.replace('_', '-')}"
        if value is None:
            continue
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif isinstance(value, str | int):
            argv += [flag, str(value)]
        else:
            argv += [part for item in value for part in (flag, item)]
    return argv


def child_env() -> dict[str, str]:
    """This process's environment with the repository root first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


@dataclass
class WorkerProcess:
    """One worker child; its stdout is the READY handshake, its stderr goes to ``log_path``."""

    worker_id: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _buffer: bytes = b""
    _ready: bool = False

    @classmethod
    def spawn(
        cls, module: str, worker_id: str, args: Sequence[str], log_path: Path
    ) -> WorkerProcess:
        """Start ``python -m module --worker-id worker_id args…`` (does not wait for it)."""
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", module, "--worker-id", worker_id, *args],
                cwd=REPO_ROOT,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        return cls(worker_id, popen, log_path)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.popen.pid

    @property
    def alive(self) -> bool:
        """True until the child has exited."""
        return self.popen.poll() is None

    def log(self, tail: int = 4000) -> str:
        """The end of the child's stderr (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def poll_ready(self) -> bool:
        """Whether the child has printed its ready line (never blocks)."""
        self._read(0)
        return self._ready

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until the child printed its ready line; fail if it exits or the deadline hits."""
        deadline = time.monotonic() + timeout
        while not self._read(min(max(deadline - time.monotonic(), 0), 0.1)):
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"worker {self.worker_id} (pid {self.pid}) not ready within {timeout}s:\n"
                    f"{self.log()}"
                )

    async def ready(self, *, within: float = 20.0) -> None:
        """Wait (off the event loop) until the child printed its ready line."""
        await asyncio.to_thread(self.wait_ready, within)

    def _read(self, wait: float) -> bool:
        """Read what stdout has within ``wait`` seconds; True once the ready line arrived."""
        if self._ready:
            return True
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        readable, _, _ = select.select([fd], [], [], wait)
        if readable:
            chunk = os.read(fd, 4096)
            if not chunk:
                code = self.popen.wait(timeout=10)
                raise AssertionError(
                    f"worker {self.worker_id} exited with {code} before it was ready:\n{self.log()}"
                )
            self._buffer += chunk
            self._ready = f"{READY} {self.worker_id} {self.pid}\n".encode() in self._buffer
        return self._ready

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the child to exit on its own (e.g. an injected crash); returns its code."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.worker_id} (pid {self.pid}) still running after {timeout}s:\n"
                f"{self.log()}"
            ) from None

    async def exited(self, *, within: float = 30.0) -> int:
        """Wait (off the event loop) for the child to exit on its own; returns its code."""
        return await asyncio.to_thread(self.wait_exit, within)

    async def terminate(self, *, within: float = 30.0) -> int:
        """SIGTERM the child by pid (a graceful stop) and wait off the loop until it exits."""
        if self.alive:
            os.kill(self.pid, signal.SIGTERM)
        return await self.exited(within=within)

    def kill(self) -> int:
        """SIGKILL the child by pid (if still running) and reap it; returns its exit code."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        return self.popen.wait(timeout=10)

    def close(self) -> None:
        """Kill if still running and release the pipe."""
        self.kill()
        if self.popen.stdout is not None:
            self.popen.stdout.close()


class WorkerGroup:
    """Spawns children of one module with shared options; :meth:`close` kills them all.

    Args:
        module: The child's module, run with ``python -m``.
        log_dir: Where each child's stderr goes.
        ready_within: Default deadline of :meth:`start` for the READY line, in seconds.
        **options: Options every child gets (see :func:`command_line`).
    """

    def __init__(
        self, module: str, log_dir: Path, *, ready_within: float = 20.0, **options: Option
    ) -> None:
        self.module = module
        self.log_dir = log_dir
        self.ready_within = ready_within
        self.options = options
        self.processes: list[WorkerProcess] = []

    def spawn(self, worker_id: str, *args: str, **options: Option) -> WorkerProcess:
        """Start a child (does not wait for it); ``options`` override the group's."""
        argv = [*command_line({**self.options, **options}), *args]
        log_path = self.log_dir / f"worker-{worker_id}-{len(self.processes)}.log"
        process = WorkerProcess.spawn(self.module, worker_id, argv, log_path)
        self.processes.append(process)
        return process

    async def start(self, worker_id: str, *args: str, **options: Option) -> WorkerProcess:
        """Spawn a child and wait (off the event loop) until its worker runs."""
        process = self.spawn(worker_id, *args, **options)
        await process.ready(within=self.ready_within)
        return process

    def close(self) -> None:
        """SIGKILL every child still running, by pid, reap it and release its pipe."""
        for process in self.processes:
            process.close()

    def logs(self, tail: int = 3000) -> str:
        """Every child's stderr tail, for failure messages."""
        return logs_of(self.processes, tail)


def logs_of(processes: Iterable[WorkerProcess], tail: int = 3000) -> str:
    """The stderr tail of each child, headed by its id, pid and exit code."""
    return "\n".join(
        f"--- {p.worker_id} (pid {p.pid}, exit {p.popen.returncode})\n{p.log(tail)}"
        for p in processes
    )


# -- child side ---------------------------------------------------------------------------


async def serve_worker(
    database: str | Database,
    sagas: Iterable[Saga],
    *,
    worker_id: str,
    lease: timedelta,
    concurrency: int,
    hooks: StepHooks | None = None,
) -> None:
    """Run a worker for ``sagas`` until SIGTERM or SIGINT, then close its engine.

    Prints ``READY <worker-id> <pid>`` on stdout once the worker runs (after its reclaim
    round). The caller closes what it built around the engine (storage, runtime, providers).
    """
    # Imported here so the parent side and ``--help`` need no database libraries.
    from cloudphone.saga import SagaEngine

    engine = SagaEngine(
        database,
        sagas,
        worker_id=worker_id,
        lease=lease,
        poll_interval=timedelta(milliseconds=50),
        hooks=hooks,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with engine.worker(concurrency=concurrency, grace=timedelta(seconds=5)):
            print(f"{READY} {worker_id} {os.getpid()}", flush=True)
            await stop.wait()
    finally:
        await engine.close()


def run_child(
    serve: Callable[[argparse.Namespace], Coroutine[Any, Any, None]], args: argparse.Namespace
) -> int:
    """A child's ``main``: log to stderr under the worker's id, run ``serve(args)``; exit 0."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {args.worker_id} %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(args))
    return 0
