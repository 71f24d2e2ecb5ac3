"""Worker child processes for chaos tests: spawn, wait until ready, SIGKILL by pid, clean up."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.worker_proc import READY

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    """One ``python -m tests.support.worker_proc`` child."""

    worker_id: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _buffer: bytes = b""
    _ready: bool = False

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

    def wait_ready(self, timeout: float) -> None:
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
            self._ready = READY.encode() in self._buffer
        return self._ready

    def kill(self) -> int:
        """SIGKILL the child by pid and reap it; returns its exit code."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        return self.popen.wait(timeout=10)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the child to exit on its own (e.g. an injected crash); returns its code."""
        return self.popen.wait(timeout=timeout)

    def close(self) -> None:
        """Kill if still running and release the pipe."""
        self.kill()
        if self.popen.stdout is not None:
            self.popen.stdout.close()


@dataclass
class WorkerPool:
    """Spawns worker children on one database and one saga name; kills them all at the end.

    Args:
        url: Database URL the children use.
        saga_name: Name of the chaos saga they run (see :mod:`tests.support.chaos`).
        log_dir: Where each child's stderr goes.
        lease_ms: Default lease of the children.
        concurrency: Default number of runs each child drives at once.
    """

    url: str
    saga_name: str
    log_dir: Path
    lease_ms: int = 1000
    concurrency: int = 4
    processes: list[WorkerProcess] = field(default_factory=list)

    def spawn(
        self,
        worker_id: str,
        *,
        lease_ms: int | None = None,
        concurrency: int | None = None,
        crash_after: Sequence[str] = (),
    ) -> WorkerProcess:
        """Start a child (does not wait for it to be ready)."""
        argv = [
            sys.executable,
            "-m",
            "tests.support.worker_proc",
            "--url",
            self.url,
            "--worker-id",
            worker_id,
            "--saga-name",
            self.saga_name,
            "--lease-ms",
            str(lease_ms if lease_ms is not None else self.lease_ms),
            "--concurrency",
            str(concurrency if concurrency is not None else self.concurrency),
        ]
        for step in crash_after:
            argv += ["--crash-after", step]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        log_path = self.log_dir / f"worker-{worker_id}-{len(self.processes)}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        process = WorkerProcess(worker_id, popen, log_path)
        self.processes.append(process)
        return process

    async def start(
        self,
        worker_id: str,
        *,
        lease_ms: int | None = None,
        concurrency: int | None = None,
        crash_after: Sequence[str] = (),
        ready_timeout: float = 20.0,
    ) -> WorkerProcess:
        """Spawn a child and wait (off the event loop) until its worker has started."""
        process = self.spawn(
            worker_id, lease_ms=lease_ms, concurrency=concurrency, crash_after=crash_after
        )
        await process.ready(within=ready_timeout)
        return process

    def close(self) -> None:
        """SIGKILL every child still running, by pid, and reap it."""
        for process in self.processes:
            process.close()

    def logs(self) -> str:
        """Every child's stderr tail, for failure messages."""
        return "\n".join(
            f"--- {p.worker_id} (pid {p.pid}, exit {p.popen.returncode})\n{p.log(1500)}"
            for p in self.processes
        )
