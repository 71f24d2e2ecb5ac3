"""Devices settings (the ``devices`` section of :class:`cloudphone.settings.Settings`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class DevicesConfig(BaseModel):
    """Device runtime choice and port ranges (env ``CLOUDPHONE_DEVICES__*``)."""

    runtime: Literal["local", "docker"] = "local"
    """``local`` (a child process per device, the embedded default) or ``docker``."""

    adb_port_min: int = Field(default=41000, ge=1024, le=65535)
    adb_port_max: int = Field(default=41999, ge=1024, le=65535)
    stream_port_min: int = Field(default=42000, ge=1024, le=65535)
    stream_port_max: int = Field(default=42999, ge=1024, le=65535)

    docker_host: str = "unix:///var/run/docker.sock"
    docker_image: str = "redroid/redroid:12.0.0-latest"
    docker_privileged: bool = True
    docker_network_mode: str = "bridge"
