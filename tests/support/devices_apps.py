"""App installs on devices for tests: real APKs, a started device, and the agent's memory."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

from cloudphone.devices.runtimes.base import Container, DeviceBootError, DeviceRuntime, Launch
from tests.support.apk_builder import build_apk
from tests.support.devices_stack import SMALL

PACKAGE = "com.example.notes"
REMOTE_APK = "/data/local/tmp/notes.apk"


def make_apk(directory: Path, version_code: int, **options: object) -> Path:
    """A real (unsigned) APK of :data:`PACKAGE` at ``version_code`` in ``directory``."""
    path = directory / f"notes-{version_code}-{len(list(directory.iterdir()))}.apk"
    build_apk(
        path,
        package=str(options.pop("package", PACKAGE)),
        version_code=version_code,
        version_name=f"{version_code}.0",
        **options,  # type: ignore[arg-type]
    )
    return path


def two_free_ports() -> tuple[int, int]:
    """Two distinct TCP ports nobody listens on right now (both held while choosing)."""
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        return first.getsockname()[1], second.getsockname()[1]


def launch(name: str, serial: str) -> Launch:
    """A small device on two free ports."""
    adb_port, stream_port = two_free_ports()
    return Launch(name, serial, adb_port, stream_port, SMALL, {"test": "apps"})


async def start_device(runtime: DeviceRuntime, name: str, serial: str) -> Container:
    """Create the device and wait until it answers as ``serial``.

    A port free when chosen may be taken by another process before the device binds it (the
    machine is shared): then the device exits, and it is made again on two other ports.
    """
    for attempt in range(3):
        container = await runtime.create(launch(name, serial))
        try:
            await runtime.initialize(container, serial, SMALL, timeout=20)
        except DeviceBootError:
            await runtime.remove(name)
            if attempt == 2:
                raise
        else:
            return container
    raise AssertionError("unreachable")


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def sha256(path: Path) -> str:
    """A file's SHA-256, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
