"""The devices service: quotas, ports, the ``device_create`` / ``device_delete`` sagas, runtimes.

Use cases live in :class:`DeviceService`; the sagas are built by :func:`build_create_saga` and
:func:`build_delete_saga` from a :class:`DeviceRuntime` (:class:`LocalRuntime`, the embedded
default, or :class:`DockerRuntime`). See ``DESIGN.md`` §3 and the module docstrings of
:mod:`.create`, :mod:`.delete`, :mod:`.quota`, :mod:`.ports` and :mod:`.sweeper`.

Names are imported lazily: the local runtime's device agents run ``python -m
cloudphone.devices.agent`` and must not pay for the database and Docker libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
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
    "Launch",
    "LocalRuntime",
    "Quota",
    "QuotaLimits",
    "Resources",
    "SweepReport",
    "Sweeper",
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
    from cloudphone.devices.models import DeviceStatus, metadata
    from cloudphone.devices.quota import Quota
    from cloudphone.devices.records import Device
    from cloudphone.devices.runtimes.base import Container, DeviceRuntime, Launch
    from cloudphone.devices.runtimes.docker import DockerOptions, DockerRuntime
    from cloudphone.devices.runtimes.local import LocalRuntime
    from cloudphone.devices.service import DeviceCreation, DeviceDeletion, DeviceService
    from cloudphone.devices.spec import DeviceSpec, QuotaLimits, Resources
    from cloudphone.devices.sweeper import Sweeper, SweepReport
