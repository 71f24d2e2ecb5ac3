"""Value types of the devices service: what a device asks for and what a user may hold."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cloudphone.domain import InvalidInputError

_RESOLUTION = re.compile(r"^([1-9][0-9]{2,3})x([1-9][0-9]{2,3})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MIN_CPU_MILLIS = 100
MIN_MEMORY_MB = 64
MIN_STORAGE_MB = 128


def cores_to_millis(cores: float) -> int:
    """CPU cores (``1.5``) as integer millicores (``1500``)."""
    return round(cores * 1000)


def api_units(dimension: str, *amounts: int) -> tuple[str, ...]:
    """A quota dimension's name and amounts of it as the API writes them (``GET /quotas/me``).

    CPU is stored in millicores but the API speaks cores: ``("cpu_millis", 1500)`` becomes
    ``("cpu_cores", "1.5")``. Messages a user reads use these, never the storage units.
    """
    if dimension != "cpu_millis":
        return (dimension, *map(str, amounts))
    cores = (str(m // 1000) if m % 1000 == 0 else str(m / 1000) for m in amounts)
    return ("cpu_cores", *cores)


def validate_name(name: str) -> str:
    """Check a device name: 1-63 of letters, digits and ``_.-``, not starting with a symbol."""
    if not _NAME.match(name):
        raise InvalidInputError(
            f"device name {name!r} must be 1-63 characters of letters, digits, '_', '.', '-', "
            "starting with a letter or digit",
            code="invalid_name",
        )
    return name


@dataclass(frozen=True)
class DeviceSpec:
    """The resources and screen of a device.

    Attributes:
        cpu_millis: CPU in millicores (1000 = one core).
        memory_mb: Memory in MiB.
        storage_mb: Storage in MiB (accounted in the quota; runtimes do not enforce it).
        resolution: Screen size ``WIDTHxHEIGHT`` in pixels.
        dpi: Screen density.
        android_version: Major Android version (``"13"``).
    """

    cpu_millis: int = 2000
    memory_mb: int = 4096
    storage_mb: int = 16384
    resolution: str = "1080x1920"
    dpi: int = 420
    android_version: str = "13"

    @property
    def width(self) -> int:
        """Screen width in pixels."""
        return int(self.resolution.split("x")[0])

    @property
    def height(self) -> int:
        """Screen height in pixels."""
        return int(self.resolution.split("x")[1])

    def to_data(self) -> dict[str, Any]:
        """As JSON for saga data."""
        return asdict(self)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> DeviceSpec:
        """From saga data written by :meth:`to_data`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def validate(self, android_versions: Sequence[str]) -> DeviceSpec:
        """Check the values on their own (not against a quota); raises InvalidInputError."""
        problems = []
        if self.cpu_millis < MIN_CPU_MILLIS:
            problems.append(f"cpu must be at least {MIN_CPU_MILLIS / 1000} cores")
        if self.memory_mb < MIN_MEMORY_MB:
            problems.append(f"memory_mb must be at least {MIN_MEMORY_MB}")
        if self.storage_mb < MIN_STORAGE_MB:
            problems.append(f"storage_mb must be at least {MIN_STORAGE_MB}")
        if not _RESOLUTION.match(self.resolution):
            problems.append(f"resolution {self.resolution!r} must be WIDTHxHEIGHT, 100-9999 px")
        if not 120 <= self.dpi <= 640:
            problems.append("dpi must be between 120 and 640")
        if self.android_version not in android_versions:
            problems.append(
                f"android_version {self.android_version!r} is not one of "
                f"{', '.join(android_versions)}"
            )
        if problems:
            raise InvalidInputError("; ".join(problems), code="invalid_spec")
        return self


@dataclass(frozen=True)
class QuotaLimits:
    """What one user may hold, in total and per device."""

    max_devices: int
    max_cpu_millis: int
    max_memory_mb: int
    max_storage_mb: int
    device_max_cpu_millis: int
    device_max_memory_mb: int
    device_max_storage_mb: int

    def check_device(self, spec: DeviceSpec) -> None:
        """Raise InvalidInputError when one device alone asks for more than a device may."""
        over = []
        for what, asked, limit in (
            ("cpu_millis", spec.cpu_millis, self.device_max_cpu_millis),
            ("memory_mb", spec.memory_mb, self.device_max_memory_mb),
            ("storage_mb", spec.storage_mb, self.device_max_storage_mb),
        ):
            if asked > limit:
                name, want, most = api_units(what, asked, limit)
                over.append(f"{name} {want} exceeds the per-device maximum {most}")
        if over:
            raise InvalidInputError("; ".join(over), code="spec_over_device_maximum")


@dataclass(frozen=True)
class Resources:
    """An amount of devices, CPU, memory and storage (usage, reservations, availability)."""

    devices: int = 0
    cpu_millis: int = 0
    memory_mb: int = 0
    storage_mb: int = 0

    @classmethod
    def of(cls, spec: DeviceSpec) -> Resources:
        """What one device with ``spec`` takes."""
        return cls(1, spec.cpu_millis, spec.memory_mb, spec.storage_mb)
