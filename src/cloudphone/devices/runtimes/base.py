"""The device runtime port: what the sagas need from whatever runs device containers.

Two adapters implement it: :mod:`.local` (a child process per device, the embedded default)
and :mod:`.docker` (Docker Engine API). Containers are addressed by *name*, which the
``device_create`` saga derives from its run id, so a retried or recovered step finds the
container an earlier attempt made instead of making a second one.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cloudphone.devices.spec import DeviceSpec

if TYPE_CHECKING:
    from cloudphone.deployment import Deployment
    from cloudphone.devices.installer import AppInstaller

LABEL_DEVICE = "cloudphone.device"
"""Label holding the device id."""
LABEL_SAGA = "cloudphone.saga"
"""Label holding the ``device_create`` run id."""
LABEL_OWNER = "cloudphone.owner"
"""Label holding the owner's user id."""


class DeviceRuntimeError(Exception):
    """A runtime call failed; retrying may help."""


class PermanentRuntimeError(DeviceRuntimeError):
    """A runtime call failed in a way retrying cannot fix (bad image, refused privileges)."""


class ContainerNotFoundError(DeviceRuntimeError):
    """No container has that name."""


class DeviceBootError(DeviceRuntimeError):
    """The device did not become ready: it exited, or something else answers on its port."""


@dataclass(frozen=True)
class Launch:
    """What CREATE_CONTAINER asks a runtime to run.

    Attributes:
        name: Container name, derived from the creation saga's id.
        serial: What the device answers the handshake with (its device id).
        adb_port: Host port of its ADB endpoint.
        stream_port: Host port of its screen stream.
        spec: Resources (limits) and screen.
        labels: Extra labels (device id, saga id, owner) for finding it later.
    """

    name: str
    serial: str
    adb_port: int
    stream_port: int
    spec: DeviceSpec
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Container:
    """A device container as the runtime sees it.

    Attributes:
        name: Its name.
        id: The runtime's id of this container instance.
        running: Whether its process is alive.
        state: Runtime-specific state word (``running``, ``exited``, ``created``...).
        labels: Its labels.
        adb_host: Host its ports listen on.
        adb_port: Host port of its ADB endpoint (None if unknown).
        stream_port: Host port of its screen stream (None if unknown).
    """

    name: str
    id: str
    running: bool
    state: str
    labels: Mapping[str, str]
    adb_host: str
    adb_port: int | None
    stream_port: int | None


@dataclass(frozen=True)
class DeviceBanner:
    """What a ready device said about itself in its handshake."""

    serial: str
    properties: Mapping[str, str]


class DeviceRuntime(Protocol):
    """Runs device containers; every method is idempotent by container name."""

    kind: str
    """``local`` or ``docker`` (stored on the device)."""

    async def create(self, launch: Launch) -> Container:
        """Create and start the container, or adopt the one with that name and start it.

        Raises PermanentRuntimeError when retrying cannot help.
        """
        ...

    async def inspect(self, name: str) -> Container | None:
        """The container with that name, or None."""
        ...

    async def stop(self, name: str) -> bool:
        """Stop it (it keeps existing); False when there is no such container."""
        ...

    async def start(self, name: str) -> Container:
        """Start a stopped container; raises ContainerNotFoundError."""
        ...

    async def remove(self, name: str) -> bool:
        """Stop and delete it; False when it did not exist."""
        ...

    async def list(self) -> list[Container]:
        """Every container this runtime manages for this platform, in any state."""
        ...

    async def initialize(
        self,
        container: Container,
        serial: str,
        spec: DeviceSpec,
        timeout: float,  # noqa: ASYNC109 - the boot deadline is this call's contract
    ) -> DeviceBanner:
        """Wait until the device answers on its ADB port as ``serial``, then configure it.

        Configuring sets the screen size and density and runs the init commands. Raises
        DeviceBootError or TimeoutError.
        """
        ...

    def adb_session(self, container: Container) -> AbstractAsyncContextManager[AppInstaller]:
        """An ADB session to a running device's files and package manager.

        ``async with runtime.adb_session(container) as device:`` then ``device.push(...)``,
        ``device.install(...)``, ``device.list_packages()``... (see
        :class:`~cloudphone.devices.installer.AppInstaller`); one connection for the block.

        Raises:
            AdbError: (entering the block) the device cannot be reached over ADB.
            DeviceRuntimeError: The container has no ADB endpoint.
        """
        ...

    async def claim(self, deployment: Deployment) -> None:
        """Bind the runtime to ``deployment`` at start: ``list`` then sees only its containers.

        Raises:
            DeploymentMismatchError: The runtime's state belongs to another deployment.
        """
        ...

    async def close(self) -> None:
        """Release connections (containers keep running)."""
        ...
