"""A localstripe server for tests: 127.0.0.1, a free port, in-memory state, stopped by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr

from cloudphone.billing.config import BillingConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk_test_localstripe_cloudphone"
"""localstripe accepts any key that starts with ``sk_``."""


def free_port() -> int:
    """A TCP port nothing listens on right now (on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class LocalStripe:
    """One localstripe child process (see ``billing_localstripe_server.py``)."""

    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>`` (what ``stripe_api_base`` takes)."""
        return f"http://127.0.0.1:{self.port}"

    def config(self, **overrides: object) -> BillingConfig:
        """Billing settings pointing the stripe provider at this server."""
        values: dict[str, object] = {
            "stripe_api_key": SecretStr(API_KEY),
            "stripe_api_base": self.base,
            "stripe_timeout": timedelta(seconds=10),
            "stripe_connect_timeout": timedelta(seconds=2),
            **overrides,
        }
        return BillingConfig.model_validate(values)

    def start(self, timeout: float = 20.0) -> None:
        """Spawn the server and wait until it answers an authenticated request."""
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        argv = [
            sys.executable,
            "-m",
            "tests.support.billing_localstripe_server",
            "--port",
            str(self.port),
        ]
        log_path = self.log_path or Path(os.devnull)
        with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"localstripe exited early with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"localstripe not ready on {self.base} within {timeout}s")
            time.sleep(0.05)

    def ready(self) -> bool:
        """Whether ``GET /v1/balance`` answers 200."""
        request = urllib.request.Request(
            self.base + "/v1/balance", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=0.5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        """SIGTERM by pid (SIGKILL if it lingers) and reap."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
