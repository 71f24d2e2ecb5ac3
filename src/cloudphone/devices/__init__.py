"""The devices service: quotas, ports, the ``device_create`` / ``device_delete`` sagas, runtimes.

Use cases live in :class:`DeviceService`; the sagas are built by :func:`build_create_saga` and
:func:`build_delete_saga` from a :class:`DeviceRuntime` (:class:`LocalRuntime`, the embedded
default, or :class:`DockerRuntime`). See ``DESIGN.md`` §3 and the module docstrings of
:mod:`.create`, :mod:`.delete`, :mod:`.quota`, :mod:`.ports` and :mod:`.sweeper`.

Decisions (details in the modules):

* **Quota** (:mod:`.quota`): per-user limits (devices, CPU in millicores, memory, storage and
  per-device maxima), ``used_*`` and ``reserved_*`` counters, and one reservation row per
  creation saga (HELD → CONSUMED → RETURNED, or HELD → RELEASED). A reservation is ONE
  conditional UPDATE. ``POST /devices`` runs it in the request transaction that inserts the
  CREATING device and starts the saga, so an over-quota request is a synchronous 409 with the
  limit named and nothing is written; RESERVE_QUOTA adopts that reservation (or makes it, for
  runs started otherwise). Limits may be lowered below usage: only new devices are refused.
* **Ports** (:mod:`.ports`): a row per port, primary key = port number (unique platform-wide),
  random free candidate + ``INSERT … ON CONFLICT DO NOTHING`` (a lost race never aborts the
  transaction); released by the device's deletion or the creation's compensation.
* **Names**: unique per owner among devices that are not DELETED (partial unique index); a
  device whose creation was undone is ERROR (with the reason) and keeps its name until deleted.
* **Containers** are named ``cloudphone-<create saga id>``: retries, takeovers and
  compensations all find the same one. RESERVE_QUOTA's compensation, always the last to run,
  turns the device ERROR. ``device_delete``'s pivot is its first step, MARK_DELETING; every
  later step is idempotent and retried until it succeeds; deleting twice returns the same run.
* **Sweeper** (:mod:`.sweeper`), at worker start and periodically: removes containers no live
  device or active creation owns; repairs creations cancelled while PENDING (the engine then
  runs no compensation, yet the request had reserved quota); restarts RUNNING devices whose
  container stopped.
* **Runtimes**: local device processes end with the process that started them (parent-death
  signal), so nothing leaks, and come back through the sweeper when the platform restarts;
  the docker runtime drives Redroid (or the test suite's busybox agent).
* **App installs** (:mod:`.installer`): ``DeviceRuntime.adb_session(container)`` opens an
  ADB session (:class:`AppInstaller`: push, ``pm install``/``uninstall``/``list packages``)
  with adb-shell, against Redroid's adbd or the local agent's (:mod:`.agent`), which reads
  the pushed APK with the neutral :mod:`cloudphone.apk` library, never the apps service.

Names are imported lazily: the local runtime's device agents run ``python -m
cloudphone.devices.agent`` and must not pay for the database and Docker libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AdbError": "cloudphone.devices.installer",
    "AppInstaller": "cloudphone.devices.installer",
    "InstallResult": "cloudphone.devices.installer",
    "PackageManagerError": "cloudphone.devices.installer",
    "PushError": "cloudphone.devices.installer",
    "TransferTimeouts": "cloudphone.devices.installer",
    "UninstallResult": "cloudphone.devices.installer",
    "DEVICE_CREATE": "cloudphone.devices.create",
    "DEVICE_DELETE": "cloudphone.devices.delete",
    "Container": "cloudphone.devices.runtimes.base",
    "Device": "cloudphone.devices.records",
    "DeviceCreation": "cloudphone.devices.service",
    "DeviceDeletion": "cloudphone.devices.service",
    "DeviceRuntime": "cloudphone.devices.runtimes.base",
    "DeviceService": "cloudphone.devices.service",
    "DeviceSpec": "cloudphone.devices.spec",
    "DeviceStatus": "cloudphone.devices.models",
    "DevicesConfig": "cloudphone.devices.config",
    "DockerOptions": "cloudphone.devices.runtimes.docker",
    "DockerRuntime": "cloudphone.devices.runtimes.docker",
    "Launch": "cloudphone.devices.runtimes.base",
    "LocalRuntime": "cloudphone.devices.runtimes.local",
    "Quota": "cloudphone.devices.quota",
    "QuotaLimits": "cloudphone.devices.spec",
    "Resources": "cloudphone.devices.spec",
    "SweepReport": "cloudphone.devices.sweeper",
    "Sweeper": "cloudphone.devices.sweeper",
    "build_create_saga": "cloudphone.devices.create",
    "build_delete_saga": "cloudphone.devices.delete",
    "metadata": "cloudphone.devices.models",
}

__all__ = [
    "DEVICE_CREATE",
    "DEVICE_DELETE",
    "AdbError",
    "AppInstaller",
    "Container",
    "Device",
    "DeviceCreation",
    "DeviceDeletion",
    "DeviceRuntime",
    "DeviceService",
    "DeviceSpec",
    "DeviceStatus",
    "DevicesConfig",
    "DockerOptions",
    "DockerRuntime",
    "InstallResult",
    "Launch",
    "LocalRuntime",
    "PackageManagerError",
    "PushError",
    "Quota",
    "QuotaLimits",
    "Resources",
    "SweepReport",
    "Sweeper",
    "TransferTimeouts",
    "UninstallResult",
    "build_create_saga",
    "build_delete_saga",
    "metadata",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:
    from cloudphone.devices.config import DevicesConfig
    from cloudphone.devices.create import DEVICE_CREATE, build_create_saga
    from cloudphone.devices.delete import DEVICE_DELETE, build_delete_saga
    from cloudphone.devices.installer import (
        AdbError,
        AppInstaller,
        InstallResult,
        PackageManagerError,
        PushError,
        TransferTimeouts,
        UninstallResult,
    )
    from cloudphone.devices.models import DeviceStatus, metadata
    from cloudphone.devices.quota import Quota
    from cloudphone.devices.records import Device
    from cloudphone.devices.runtimes.base import Container, DeviceRuntime, Launch
    from cloudphone.devices.runtimes.docker import DockerOptions, DockerRuntime
    from cloudphone.devices.runtimes.local import LocalRuntime
    from cloudphone.devices.service import DeviceCreation, DeviceDeletion, DeviceService
    from cloudphone.devices.spec import DeviceSpec, QuotaLimits, Resources
    from cloudphone.devices.sweeper import Sweeper, SweepReport
