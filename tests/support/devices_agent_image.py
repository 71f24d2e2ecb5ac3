"""A container image whose adbd is the project's own device agent, for the docker runtime tests.

There is no Android image here, and the busybox fake image speaks only the line protocol. This
image runs ``python -m cloudphone.devices.agent`` as its entrypoint, so adb-shell talks ADB to
a real adbd-speaking process in a real container, as it would to Redroid. It is imported with
``docker import`` from a tiny root (``/bin``, ``/lib`` symlinks into ``/usr``, ``/data``,
``/tmp``): the interpreter, the virtualenv, the source tree and ``/usr`` come from the host as
read-only bind mounts (:func:`agent_binds`), at the same paths. The runtime's Redroid boot
arguments (``androidboot.serialno=...``) reach the agent as its positional arguments.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import cloudphone

AGENT_IMAGE = "cloudphone/agent-device:test"
SOURCE_ROOT = Path(cloudphone.__file__).resolve().parents[1]
"""The directory holding the ``cloudphone`` package being tested (a worktree's ``src``)."""


def agent_binds() -> tuple[str, ...]:
    """Read-only binds that give the container this interpreter and this source tree."""
    paths = {Path("/usr"), Path(sys.base_prefix), Path(sys.prefix), SOURCE_ROOT}
    if Path("/etc/ld.so.cache").exists():
        paths.add(Path("/etc/ld.so.cache"))
    return tuple(f"{path}:{path}:ro" for path in sorted(paths))


def _root_tar() -> bytes:
    """The image's own files: a few directories and the merged-/usr symlinks."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (("data", 0o755), ("tmp", 0o1777), ("etc", 0o755), ("dev", 0o755)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        for link in ("bin", "lib", "lib64", "sbin"):
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, f"usr/{link}"
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return buffer.getvalue()


def build_agent_image(docker_url: str, tag: str = AGENT_IMAGE) -> str:
    """Import the image into the daemon at ``docker_url``; returns its tag."""
    python = Path(sys.executable)
    changes = [
        f"ENV PYTHONPATH={SOURCE_ROOT}",
        "ENV PATH=/usr/bin:/bin",
        "ENV DEVICE_DATA_DIR=/data",
        "ENV PYTHONDONTWRITEBYTECODE=1",
        f'ENTRYPOINT ["{python}", "-m", "cloudphone.devices.agent"]',
        "WORKDIR /",
        "LABEL cloudphone.agent=1",
    ]
    command = ["docker", "-H", docker_url, "import"]
    for change in changes:
        command += ["--change", change]
    subprocess.run(
        [*command, "-", tag], input=_root_tar(), check=True, capture_output=True, timeout=120
    )
    return tag
