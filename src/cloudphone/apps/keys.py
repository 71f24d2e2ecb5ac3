"""Object keys of uploaded APKs: ``apps/<package>/<version code>/<saga id>.apk``.

The key is derived from the upload's saga run, so every attempt of UPLOAD_TO_STORAGE writes
the same key (a retry replaces its own object) and the compensation knows what to remove even
when the step's output was never recorded. Reconcile reads the saga id back from a key.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from cloudphone.apps.storage.base import check_key

PREFIX = "apps/"
"""Every APK object lives under this prefix; reconcile looks nowhere else."""

_KEY = re.compile(r"apps/([A-Za-z0-9_.]+)/(\d+)/([0-9a-f-]{36})\.apk")


@dataclass(frozen=True)
class ObjectKey:
    """The parts of an APK object key."""

    package_name: str
    version_code: int
    saga_id: str

    def __str__(self) -> str:
        return check_key(f"{PREFIX}{self.package_name}/{self.version_code}/{self.saga_id}.apk")

    @classmethod
    def parse(cls, key: str) -> ObjectKey | None:
        """The parts of ``key``, or None when it is not an APK object key."""
        match = _KEY.fullmatch(key)
        if match is None:
            return None
        try:
            saga_id = str(uuid.UUID(match.group(3)))
        except ValueError:
            return None
        if saga_id != match.group(3):
            return None
        return cls(match.group(1), int(match.group(2)), saga_id)


def object_key(package_name: str, version_code: int, saga_id: str) -> str:
    """The key an ``app_upload`` run stores its APK under."""
    return str(ObjectKey(package_name, version_code, saga_id))
