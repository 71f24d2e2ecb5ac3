"""The device agent's filesystem: device paths mapped into the device's own data directory.

A device path (``/data/local/tmp/app.apk``) is normalised and mapped under ``<root>/``, so no
path, ``..`` included, reaches outside it. As for the ``shell`` user on a phone, only
``/data/local/tmp`` and the shared storage (``/sdcard``, ``/storage/emulated/0``) are
writable; everything else answers "Permission denied" to a write.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
from pathlib import Path

WRITABLE = ("/data/local/tmp", "/sdcard", "/storage/emulated/0")
"""Device directories the shell user may write in."""


class DeviceFiles:
    """The files of one device.

    Args:
        root: Host directory holding the device's filesystem.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def normalise(device_path: str) -> str:
        """The absolute, normalised form of a device path.

        Raises:
            OSError: ``EINVAL`` for a relative path or one with a NUL byte.
        """
        if not device_path.startswith("/") or "\0" in device_path:
            raise OSError(errno.EINVAL, "Invalid argument", device_path)
        return posixpath.normpath(device_path).replace("//", "/")

    def host_path(self, device_path: str) -> Path:
        """Where a device path lives on the host."""
        return self.root / self.normalise(device_path).lstrip("/")

    def writable(self, device_path: str) -> bool:
        """Whether the shell user may create or delete ``device_path``."""
        path = self.normalise(device_path)
        return any(path.startswith(f"{top}/") for top in WRITABLE)

    def for_writing(self, device_path: str) -> Path:
        """The host path of a file about to be written, its directory made.

        Raises:
            PermissionError: Outside the writable directories.
        """
        if not self.writable(device_path):
            raise PermissionError(errno.EACCES, "Permission denied", device_path)
        path = self.host_path(device_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def remove(self, device_path: str) -> None:
        """Delete a file (``rm``).

        Raises:
            FileNotFoundError: There is no such file.
            PermissionError: Outside the writable directories.
            IsADirectoryError: It is a directory.
        """
        if not self.writable(device_path):
            raise PermissionError(errno.EACCES, "Permission denied", device_path)
        path = self.host_path(device_path)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", device_path)
        path.unlink()

    def install_copy(self, source: Path, device_path: str) -> None:
        """Put ``source`` at a system path (the package manager's copy of an APK).

        A hard link when possible: installing a large APK costs no copy.
        """
        target = self.host_path(device_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)

    def remove_tree(self, device_path: str) -> None:
        """Delete a system directory and what it holds (an uninstalled package's code)."""
        shutil.rmtree(self.host_path(device_path), ignore_errors=True)
