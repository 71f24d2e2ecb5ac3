"""A private dockerd for the docker runtime tests, and the busybox fake-device image.

The ``dockerd`` fixture (session scope) starts its own daemon with all state under a short
temporary directory (its own socket, pidfile, containerd namespace and cgroup parent; no
bridge, no iptables), imports the fake-device image with ``docker import``, and stops the
daemon at the end after force-removing every container. It needs root and the ``docker.io``
and ``busybox-static`` packages; without them the docker tests are skipped, saying which is
missing. ``CLOUDPHONE_TEST_DOCKER=0`` skips them on purpose.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudphone.devices.runtimes.docker import DockerOptions, DockerRuntime
from tests.support.devices_agent_image import agent_binds, build_agent_image
from tests.support.devices_stack import remove_all

HERE = Path(__file__).resolve().parent
DOCKERD_SCRIPT = HERE / "devices_dockerd.sh"
IMAGE_SCRIPT = HERE / "devices_fake_image.sh"
FAKE_IMAGE = "cloudphone/fake-device:test"


@dataclass(frozen=True)
class PrivateDockerd:
    """A running private daemon."""

    state_dir: Path
    pid: int
    image: str = FAKE_IMAGE

    @property
    def url(self) -> str:
        """Its Engine API address."""
        return f"unix://{self.state_dir / 'docker.sock'}"

    def options(self, instance: str, **overrides: object) -> DockerOptions:
        """Runtime options for the fake image on the host network (no bridge here)."""
        values: dict[str, object] = {
            "url": self.url,
            "image": self.image,
            "privileged": False,  # this sandbox lacks CAP_SYS_RESOURCE: privileged fails
            "network_mode": "host",
            "protocol": "line",
            "pids_limit": 64,
            "stop_timeout": 1,
            "instance": instance,
            **overrides,
        }
        return DockerOptions(**values)  # type: ignore[arg-type]

    def cli(self, *args: str) -> str:
        """Run the docker CLI against this daemon; its stdout."""
        done = subprocess.run(
            ["docker", "-H", self.url, *args], check=True, capture_output=True, text=True
        )
        return done.stdout


def why_no_docker() -> str | None:
    """Why a private dockerd cannot be started here (None when it can)."""
    if os.environ.get("CLOUDPHONE_TEST_DOCKER") == "0":
        return "CLOUDPHONE_TEST_DOCKER=0"
    if os.geteuid() != 0:
        return "dockerd needs root (rootless mode is not set up)"
    for binary in ("dockerd", "docker", "containerd", "runc"):
        if shutil.which(binary) is None:
            return f"{binary} not installed (apt-get install docker.io)"
    if not Path("/bin/busybox").exists():
        return "busybox not installed (apt-get install busybox-static)"
    return None


def start_dockerd() -> PrivateDockerd:
    """Start a daemon and import the fake image (fails with the daemon's log)."""
    # Short path: containerd's unix sockets live under it (107-byte limit).
    state_dir = Path(tempfile.mkdtemp(prefix="cpdk-", dir="/tmp"))
    started = subprocess.run(
        [str(DOCKERD_SCRIPT), str(state_dir)], capture_output=True, text=True, timeout=60
    )
    if started.returncode != 0:
        shutil.rmtree(state_dir, ignore_errors=True)
        pytest.fail(f"private dockerd did not start:\n{started.stderr}")
    daemon = PrivateDockerd(state_dir, int(started.stdout.strip()))
    subprocess.run(
        [str(IMAGE_SCRIPT), daemon.url, daemon.image],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return daemon


def stop_dockerd(daemon: PrivateDockerd) -> None:
    """Remove every container, stop the daemon, delete its state."""
    ids = daemon.cli("ps", "-aq").split()
    if ids:
        daemon.cli("rm", "-f", *ids)
    subprocess.run(
        [str(DOCKERD_SCRIPT), "--stop", str(daemon.state_dir)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    shutil.rmtree(daemon.state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[PrivateDockerd]:
    """A private dockerd with the fake-device image, for the whole session."""
    reason = why_no_docker()
    if reason is not None:
        pytest.skip(f"no container engine can be started here: {reason}")
    daemon = start_dockerd()
    yield daemon
    stop_dockerd(daemon)


@pytest.fixture
async def docker_runtime(dockerd: PrivateDockerd, unique: str) -> AsyncIterator[DockerRuntime]:
    """A docker runtime whose containers carry this test's instance label; removed at the end."""
    runtime = DockerRuntime(dockerd.options(f"test-{unique}"))
    yield runtime
    await remove_all(runtime)
    await runtime.close()


@pytest.fixture(scope="session")
def agent_image(dockerd: PrivateDockerd) -> str:
    """The image running the project's device agent (imported once per session)."""
    return build_agent_image(dockerd.url)


@pytest.fixture
async def adb_runtime(
    dockerd: PrivateDockerd, agent_image: str, unique: str
) -> AsyncIterator[DockerRuntime]:
    """A docker runtime that speaks ADB to its containers (the agent image), as to Redroid."""
    options = dockerd.options(
        f"adb-{unique}", image=agent_image, protocol="adb", binds=agent_binds()
    )
    runtime = DockerRuntime(options)
    yield runtime
    await remove_all(runtime)
    await runtime.close()
