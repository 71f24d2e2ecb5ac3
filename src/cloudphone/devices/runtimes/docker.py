"""The docker runtime: device containers through the Docker Engine API (aiodocker).

By default it runs Redroid (``redroid/redroid:<version>.0.0-latest``, privileged, bridge
network with the ADB and stream ports published on ``adb_host``) and talks ADB to it with
adb-shell. With ``protocol="line"`` it runs an image whose command is a fake device agent
(the test suite's busybox image) and speaks the agent line protocol instead.

This is the only module that touches aiodocker's untyped JSON. Every container carries the
labels ``cloudphone.managed=1`` and ``cloudphone.runtime=<instance>`` (and its ports), so
``list`` finds exactly this platform's containers and ``inspect`` needs nothing else. Once
the platform has claimed the runtime for its deployment, containers also carry
``cloudphone.deployment=<id>`` and ``list`` sees only those: deployments sharing one engine
never sweep each other's devices (containers made before there were deployment ids have no
such label, so no sweep removes them; ``inspect`` by name still finds them).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiodocker
from aiodocker.exceptions import DockerError

from cloudphone.deployment import LABEL_DEPLOYMENT, Deployment
from cloudphone.devices.adb import AdbLink
from cloudphone.devices.config import DevicesConfig
from cloudphone.devices.installer import AppInstaller, TransferTimeouts
from cloudphone.devices.links import DeviceLink, LineLink, wait_ready
from cloudphone.devices.runtimes.base import (
    Container,
    ContainerNotFoundError,
    DeviceBanner,
    DeviceRuntimeError,
    Launch,
    PermanentRuntimeError,
)
from cloudphone.devices.spec import DeviceSpec

LABEL_MANAGED = "cloudphone.managed"
LABEL_RUNTIME = "cloudphone.runtime"
LABEL_ADB_PORT = "cloudphone.adb_port"
LABEL_STREAM_PORT = "cloudphone.stream_port"


@dataclass(frozen=True)
class DockerOptions:
    """How device containers are made.

    Attributes:
        url: Engine address (``unix:///var/run/docker.sock``, ``tcp://host:2375``).
        image: Image name; ``{android_version}`` is replaced by the device's version.
        privileged: Run privileged (Redroid needs it).
        network_mode: ``bridge`` publishes the container ports on ``adb_host``; ``host`` makes
            the device listen on its allocated host ports (``AGENT_PORT``/``STREAM_PORT`` env).
        adb_host: Host address of the published ports.
        adb_container_port: adbd's port inside the container (bridge mode).
        stream_container_port: The stream's port inside the container (bridge mode).
        protocol: ``adb`` (Redroid) or ``line`` (fake agent image).
        pids_limit: Most processes in a container.
        stop_timeout: Seconds between SIGTERM and SIGKILL on stop (and on daemon shutdown).
        instance: Value of the ``cloudphone.runtime`` label: which platform owns a container.
        init_commands: Shell commands run on an ADB device after boot.
        adb_key_path: RSA key for ADB auth.
        binds: Extra bind mounts, ``host:container[:ro]`` (a Redroid ``/data`` volume; the
            tests' agent image gets its interpreter and code this way).
        transfer_timeouts: Deadlines of pushes and installs in ``adb_session``.
    """

    url: str = "unix:///var/run/docker.sock"
    image: str = "redroid/redroid:{android_version}.0.0-latest"
    privileged: bool = True
    network_mode: str = "bridge"
    adb_host: str = "127.0.0.1"
    adb_container_port: int = 5555
    stream_container_port: int = 5900
    protocol: Literal["adb", "line"] = "adb"
    pids_limit: int = 4096
    stop_timeout: int = 2
    instance: str = "cloudphone"
    init_commands: tuple[str, ...] = ()
    adb_key_path: Path | None = None
    binds: tuple[str, ...] = ()
    transfer_timeouts: TransferTimeouts = field(default_factory=TransferTimeouts)

    @classmethod
    def from_config(cls, config: DevicesConfig, instance: str = "cloudphone") -> DockerOptions:
        """Options from the devices settings."""
        return cls(
            url=config.docker_host,
            image=config.docker_image,
            privileged=config.docker_privileged,
            network_mode=config.docker_network_mode,
            adb_host=config.adb_host,
            adb_container_port=config.docker_adb_container_port,
            stream_container_port=config.docker_stream_container_port,
            protocol=config.docker_protocol,
            pids_limit=config.docker_pids_limit,
            instance=instance,
            init_commands=tuple(config.init_commands),
            adb_key_path=config.docker_adb_key_path,
        )


def _permanent(error: DockerError) -> bool:
    # 400: bad config; 404 on create: no such image; OCI errors: the host refuses (caps).
    return error.status in (400, 404) or "OCI runtime" in error.message


class DockerRuntime:
    """Device containers on a Docker Engine.

    Args:
        options: How containers are made and reached.
    """

    kind = "docker"

    def __init__(self, options: DockerOptions) -> None:
        self.options = options
        self._client: aiodocker.Docker | None = None
        self.deployment_id: str | None = None
        """The deployment whose containers this runtime makes and lists (set by ``claim``)."""

    @property
    def _docker(self) -> aiodocker.Docker:
        # Created on first use: aiodocker's session must live on the running loop.
        if self._client is None:
            self._client = aiodocker.Docker(url=self.options.url)
        return self._client

    def _config(self, launch: Launch) -> dict[str, Any]:
        """The Engine API body of ``POST /containers/create`` for a device."""
        o, spec = self.options, launch.spec
        host_mode = o.network_mode == "host"
        adb = launch.adb_port if host_mode else o.adb_container_port
        stream = launch.stream_port if host_mode else o.stream_container_port
        env = {
            "AGENT_PORT": adb,
            "STREAM_PORT": stream,
            "DEVICE_SERIAL": launch.serial,
            "DEVICE_ANDROID_VERSION": spec.android_version,
        }
        config: dict[str, Any] = {
            "Image": o.image.format(android_version=spec.android_version),
            "Env": [f"{k}={v}" for k, v in env.items()],
            "Labels": {
                LABEL_MANAGED: "1",
                LABEL_RUNTIME: o.instance,
                LABEL_ADB_PORT: str(launch.adb_port),
                LABEL_STREAM_PORT: str(launch.stream_port),
                **({LABEL_DEPLOYMENT: self.deployment_id} if self.deployment_id else {}),
                **launch.labels,
            },
            "StopTimeout": o.stop_timeout,
            "HostConfig": self._host_config(launch),
        }
        if not host_mode:
            config["ExposedPorts"] = {f"{adb}/tcp": {}, f"{stream}/tcp": {}}
            config["HostConfig"]["PortBindings"] = {
                f"{adb}/tcp": [{"HostIp": o.adb_host, "HostPort": str(launch.adb_port)}],
                f"{stream}/tcp": [{"HostIp": o.adb_host, "HostPort": str(launch.stream_port)}],
            }
        if o.protocol == "adb":
            config["Cmd"] = [
                f"androidboot.redroid_width={spec.width}",
                f"androidboot.redroid_height={spec.height}",
                f"androidboot.redroid_dpi={spec.dpi}",
                f"androidboot.serialno={launch.serial}",
            ]
        return config

    def _host_config(self, launch: Launch) -> dict[str, Any]:
        """Network, limits (CPU, memory without swap, pids), privileges, no restarts."""
        memory = launch.spec.memory_mb * 1024 * 1024
        return {
            "NetworkMode": self.options.network_mode,
            "NanoCpus": launch.spec.cpu_millis * 1_000_000,
            "Memory": memory,
            "MemorySwap": memory,
            "PidsLimit": self.options.pids_limit,
            "Privileged": self.options.privileged,
            "RestartPolicy": {"Name": "no"},
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}},
            "Binds": list(self.options.binds),
        }

    async def create(self, launch: Launch) -> Container:
        """Create and start; on a name conflict adopt the existing container and start it."""
        try:
            await self._docker.containers.create(self._config(launch), name=launch.name)
        except DockerError as error:
            if error.status != 409:
                raise self._error(f"create {launch.name}", error) from error
        container = await self.inspect(launch.name)
        if container is None:
            raise DeviceRuntimeError(f"container {launch.name} vanished after create")
        return container if container.running else await self.start(launch.name)

    async def inspect(self, name: str) -> Container | None:
        """The container with that name, or None."""
        try:
            data = await self._docker.containers.container(name).show()
        except DockerError as error:
            if error.status == 404:
                return None
            raise self._error(f"inspect {name}", error) from error
        return self._from_inspect(data)

    async def stop(self, name: str) -> bool:
        """Stop it (SIGTERM, SIGKILL after ``stop_timeout``)."""
        try:
            await self._docker.containers.container(name).stop(t=self.options.stop_timeout)
        except DockerError as error:
            if error.status == 404:
                return False
            if error.status != 304:  # 304: already stopped
                raise self._error(f"stop {name}", error) from error
        return True

    async def start(self, name: str) -> Container:
        """Start a stopped container."""
        try:
            await self._docker.containers.container(name).start()
        except DockerError as error:
            if error.status == 404:
                raise ContainerNotFoundError(f"no container {name}") from error
            if error.status != 304:  # 304: already running
                raise self._error(f"start {name}", error) from error
        container = await self.inspect(name)
        if container is None:
            raise ContainerNotFoundError(f"container {name} vanished after start")
        return container

    async def remove(self, name: str) -> bool:
        """Force-remove (SIGKILL, delete, anonymous volumes)."""
        try:
            await self._docker.containers.container(name).delete(force=True, v=True)
        except DockerError as error:
            if error.status == 404:
                return False
            if error.status == 409 and "already in progress" in error.message:
                return True
            raise self._error(f"remove {name}", error) from error
        return True

    async def claim(self, deployment: Deployment) -> None:
        """Label new containers with the deployment id, and list only those from now on."""
        self.deployment_id = deployment.id

    async def list(self) -> list[Container]:
        """Every container of this platform (and deployment, once claimed), any state."""
        labels = [f"{LABEL_MANAGED}=1", f"{LABEL_RUNTIME}={self.options.instance}"]
        if self.deployment_id:
            labels.append(f"{LABEL_DEPLOYMENT}={self.deployment_id}")
        filters = {"label": labels}
        try:
            found = await self._docker.containers.list(all=True, filters=filters)
        except DockerError as error:
            raise self._error("list containers", error) from error
        return [self._from_summary(c._container) for c in found]

    async def initialize(
        self,
        container: Container,
        serial: str,
        spec: DeviceSpec,
        timeout: float,  # noqa: ASYNC109 - the boot deadline is this call's contract
    ) -> DeviceBanner:
        """Wait until the device answers as ``serial`` on its ADB port, then configure it."""
        if container.adb_port is None:
            raise DeviceRuntimeError(f"container {container.name} has no ADB port label")
        link = self._link(container.adb_host, container.adb_port)

        async def alive() -> bool:
            current = await self.inspect(container.name)
            return current is not None and current.running

        banner = await wait_ready(link, serial, alive, timeout, interval=self._interval)
        await link.configure(spec)
        return banner

    def adb_session(self, container: Container) -> AbstractAsyncContextManager[AppInstaller]:
        """ADB to the container's adbd (adb-shell, with the configured key): push, install."""
        if container.adb_port is None:
            raise DeviceRuntimeError(f"container {container.name} has no ADB port label")
        if self.options.protocol != "adb":
            raise PermanentRuntimeError(
                f"container {container.name} speaks the line protocol: it has no adbd"
            )
        link = AdbLink(container.adb_host, container.adb_port, key_path=self.options.adb_key_path)
        return link.apps(self.options.transfer_timeouts)

    @property
    def _interval(self) -> float:
        return 1.0 if self.options.protocol == "adb" else 0.05

    def _link(self, host: str, port: int) -> DeviceLink:
        if self.options.protocol == "adb":
            return AdbLink(
                host,
                port,
                init_commands=self.options.init_commands,
                key_path=self.options.adb_key_path,
            )
        return LineLink(host, port)

    async def close(self) -> None:
        """Close the HTTP session (on the loop that opened it)."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- JSON -> Container -------------------------------------------------------------

    def _from_inspect(self, data: Mapping[str, Any]) -> Container:
        labels = dict(data["Config"].get("Labels") or {})
        return self._container(
            str(data["Name"]).lstrip("/"),
            str(data["Id"]),
            bool(data["State"]["Running"]),
            str(data["State"]["Status"]),
            labels,
        )

    def _from_summary(self, data: Mapping[str, Any]) -> Container:
        return self._container(
            str(data["Names"][0]).lstrip("/"),
            str(data["Id"]),
            data["State"] == "running",
            str(data["State"]),
            dict(data.get("Labels") or {}),
        )

    def _container(
        self, name: str, cid: str, running: bool, state: str, labels: dict[str, str]
    ) -> Container:
        def port(label: str) -> int | None:
            value = labels.get(label)
            return int(value) if value and value.isdigit() else None

        return Container(
            name=name,
            id=cid,
            running=running,
            state=state,
            labels=labels,
            adb_host=self.options.adb_host,
            adb_port=port(LABEL_ADB_PORT),
            stream_port=port(LABEL_STREAM_PORT),
        )

    @staticmethod
    def _error(what: str, error: DockerError) -> DeviceRuntimeError:
        kind = PermanentRuntimeError if _permanent(error) else DeviceRuntimeError
        return kind(f"docker {what}: [{error.status}] {error.message}")
