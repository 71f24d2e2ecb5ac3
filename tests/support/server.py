"""``cloudphone serve`` / ``cloudphone worker`` child processes for end-to-end tests.

Each child runs ``python -m cloudphone …`` with a clean ``CLOUDPHONE_*`` environment, binds
127.0.0.1 on a free port, writes its JSON log to a file, and is stopped by pid: SIGTERM (the
graceful path under test), then SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx

from cloudphone.api.auth import issue_token
from cloudphone.domain import Role
from tests.support.waiting import wait_sync

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_SECRET = "e2e-test-secret-" + "x" * 32
WORKER_READY = '"worker ready"'
"""What a ``cloudphone worker`` logs (JSON) once it claims work."""
"""JWT secret given to every child, so tests can mint tokens."""


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(data_dir: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a child: no inherited ``CLOUDPHONE_*``, fast leases, JSON logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPHONE_")}
    env.update(
        CLOUDPHONE_DATA_DIR=str(data_dir),
        CLOUDPHONE_JWT_SECRET=TEST_SECRET,
        CLOUDPHONE_LOG_FORMAT="json",
        CLOUDPHONE_WORKER_LEASE="2s",
        CLOUDPHONE_WORKER_POLL_INTERVAL="100ms",
        CLOUDPHONE_SHUTDOWN_GRACE="15s",
        PYTHONUNBUFFERED="1",
    )
    if database_url is not None:
        env["CLOUDPHONE_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def token(user: str, role: Role = Role.USER, ttl: timedelta = timedelta(hours=1)) -> str:
    """A bearer token the children accept."""
    return issue_token(TEST_SECRET, user, role, ttl=ttl)


def auth(user: str, role: Role = Role.USER) -> dict[str, str]:
    """Authorization header for ``user``."""
    return {"Authorization": f"Bearer {token(user, role)}"}


@dataclass
class CloudphoneProcess:
    """One ``python -m cloudphone <args>`` child."""

    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    base_url: str | None = None
    _log_file: object = field(default=None, repr=False)

    @classmethod
    def spawn(
        cls, args: list[str], *, env: dict[str, str], log_path: Path, cwd: Path
    ) -> CloudphoneProcess:
        """Start the child; its stdout and stderr go to ``log_path``."""
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        popen = subprocess.Popen(
            [sys.executable, "-m", "cloudphone", *args],
            env=env,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        return cls(args, log_path, popen, _log_file=log_file)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.popen.pid

    @property
    def alive(self) -> bool:
        """True until the child exited."""
        return self.popen.poll() is None

    def log(self, tail: int = 6000) -> str:
        """The end of the child's output (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        """Wait until the child's output contains ``text``; fail if it exits first."""

        def seen() -> bool:
            if text in self.log(tail=1_000_000):
                return True
            if not self.alive:
                raise AssertionError(
                    f"{self.args} exited with {self.popen.returncode}:\n{self.log()}"
                )
            return False

        wait_sync(seen, timeout=timeout, interval=0.05, what=f"{self.args} logged {text!r}")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until ``GET /healthz`` answers 200."""
        assert self.base_url is not None

        def healthy() -> bool:
            if not self.alive:
                raise AssertionError(
                    f"{self.args} exited with {self.popen.returncode}:\n{self.log()}"
                )
            try:
                return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_sync(healthy, timeout=timeout, interval=0.1, what=f"{self.base_url} healthy")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM by pid and wait; SIGKILL if it has not exited within ``timeout``."""
        if self.alive:
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.args} ignored SIGTERM for {timeout}s:\n{self.log()}"
            ) from None

    def kill(self) -> int:
        """SIGKILL by pid and reap."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
        return self.popen.wait(timeout=10)

    def stop(self) -> None:
        """Best-effort cleanup: SIGTERM, then SIGKILL after 20 s; close the log."""
        try:
            if self.alive:
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self.popen.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.kill()
        finally:
            close = getattr(self._log_file, "close", None)
            if close is not None:
                close()


def spawn_serve(
    workdir: Path, env: dict[str, str], *extra_args: str, name: str = "serve"
) -> CloudphoneProcess:
    """``cloudphone serve`` on a free port (not waited on: call ``wait_healthy``)."""
    port = free_port()
    process = CloudphoneProcess.spawn(
        ["serve", "--host", "127.0.0.1", "--port", str(port), *extra_args],
        env=env,
        log_path=workdir / f"{name}.log",
        cwd=workdir,
    )
    process.base_url = f"http://127.0.0.1:{port}"
    return process


def spawn_worker(workdir: Path, env: dict[str, str], name: str) -> CloudphoneProcess:
    """``cloudphone worker --id <name>`` (not waited on: call ``wait_log('"worker ready"')``)."""
    return CloudphoneProcess.spawn(
        ["worker", "--id", name], env=env, log_path=workdir / f"{name}.log", cwd=workdir
    )


def start_serve(
    workdir: Path, env: dict[str, str], *extra_args: str, name: str = "serve"
) -> CloudphoneProcess:
    """``cloudphone serve`` on a free port, waited on until healthy."""
    process = spawn_serve(workdir, env, *extra_args, name=name)
    try:
        process.wait_healthy()
    except BaseException:
        process.stop()
        raise
    return process


def start_worker(workdir: Path, env: dict[str, str], name: str) -> CloudphoneProcess:
    """``cloudphone worker --id <name>``, waited on until it logged it is ready."""
    process = spawn_worker(workdir, env, name)
    try:
        process.wait_log(WORKER_READY)
    except BaseException:
        process.stop()
        raise
    return process
