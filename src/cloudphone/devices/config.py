"""Devices settings (the ``devices`` section of :class:`cloudphone.settings.Settings`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from cloudphone.config import Duration, Renamed, Section


class QuotaDefaults(Section):
    """Limits of a user who has no quota row yet (env ``CLOUDPHONE_DEVICES__DEFAULT_QUOTA__*``).

    An admin overrides them per user with ``PUT /admin/quotas/{user_id}``.
    """

    max_devices: int = Field(default=2, ge=0)
    """Devices a user may hold at once (CREATING, RUNNING, STOPPED, DELETING)."""

    max_cpu_cores: float = Field(default=8.0, ge=0)
    """CPU cores summed over the user's devices."""

    max_memory_mb: int = Field(default=16384, ge=0)
    """Memory summed over the user's devices."""

    max_storage_mb: int = Field(default=65536, ge=0)
    """Storage summed over the user's devices."""

    device_max_cpu_cores: float = Field(default=4.0, gt=0)
    """Largest CPU a single device may ask for."""

    device_max_memory_mb: int = Field(default=8192, gt=0)
    """Largest memory a single device may ask for."""

    device_max_storage_mb: int = Field(default=32768, gt=0)
    """Largest storage a single device may ask for."""


class DevicesConfig(Section):
    """Device runtime, port ranges, quotas and timings (env ``CLOUDPHONE_DEVICES__*``)."""

    env_prefix: ClassVar[str] = "CLOUDPHONE_DEVICES__"
    renamed: ClassVar[dict[str, Renamed]] = {
        "boot_timeout_seconds": Renamed("boot_timeout"),
        "runtime_call_timeout_seconds": Renamed("runtime_call_timeout"),
        "retry_initial_seconds": Renamed("retry_initial_interval"),
        "sweep_interval_seconds": Renamed("sweep_interval"),
    }

    runtime: Literal["local", "docker"] = "local"
    """``local`` (a child process per device, the embedded default) or ``docker``."""

    # Defaults stay below Linux's ephemeral range (32768-60999) so outgoing connections of
    # other programs never hold a device port.
    adb_port_min: int = Field(default=20000, ge=1024, le=65535)
    """Lowest host port given to a device's ADB endpoint."""

    adb_port_max: int = Field(default=24999, ge=1024, le=65535)
    """Highest host port given to a device's ADB endpoint (the range caps how many devices
    one host runs)."""

    stream_port_min: int = Field(default=25000, ge=1024, le=65535)
    """Lowest host port given to a device's screen stream (must not overlap the ADB range)."""

    stream_port_max: int = Field(default=29999, ge=1024, le=65535)
    """Highest host port given to a device's screen stream."""

    adb_host: str = "127.0.0.1"
    """Address devices listen on and clients connect to (ADB and screen stream)."""

    default_quota: QuotaDefaults = Field(default_factory=QuotaDefaults)
    """Limits of users without a quota of their own."""

    android_versions: list[str] = Field(default_factory=lambda: ["11", "12", "13", "14"])
    """Android versions a device may ask for."""

    boot_timeout: Duration = Field(default=timedelta(seconds=60), gt=timedelta(0))
    """How long INITIALIZE_DEVICE waits for the device to answer its handshake."""

    runtime_call_timeout: Duration = Field(default=timedelta(seconds=60), gt=timedelta(0))
    """Per-attempt timeout of runtime calls (create, stop, remove)."""

    retry_initial_interval: Duration = Field(default=timedelta(seconds=1), gt=timedelta(0))
    """First retry delay of a device saga step (doubling, full jitter)."""

    retry_max_attempts: int = Field(default=4, ge=1)
    """Attempts of a step before the creation is compensated."""

    sweep_interval: Duration = Field(default=timedelta(minutes=5), ge=timedelta(0))
    """How often worker processes run the sweeper (orphan containers, stale creations) after
    the sweep at start; 0 sweeps at start only."""

    watch_interval: Duration = Field(default=timedelta(seconds=3), ge=timedelta(0))
    """How often worker processes check that every RUNNING device's process or container is
    alive (one runtime listing per round) and restart the dead ones; 0 turns it off."""

    install_spool_sweep_interval: Duration = Field(
        default=timedelta(minutes=5), ge=timedelta(0), le=timedelta(days=1)
    )
    """How often worker processes remove install spool files (``<data_dir>/installs``) whose
    ``app_install`` run is over or unknown, after the sweep at start; 0 sweeps at start only."""

    install_spool_grace: Duration = Field(
        default=timedelta(minutes=10), ge=timedelta(seconds=1), le=timedelta(days=7)
    )
    """How long an install spool file must have been left untouched before a sweep may
    remove it (a file being written is never older)."""

    local_protocol: Literal["line", "adb"] = "line"
    """How the local runtime initialises its agents: their line protocol, or real ADB (the
    Redroid code path: adb-shell, ``wm size``/``wm density`` and ``init_commands``)."""

    local_state_dir: Path | None = None
    """Where the local runtime keeps one record per device process; default
    ``<data_dir>/devices``."""

    docker_host: str = "unix:///var/run/docker.sock"
    """Docker Engine API address (``unix:///path/docker.sock`` or ``tcp://host:port``)."""

    docker_image: str = "redroid/redroid:{android_version}.0.0-latest"
    """Image of a device; ``{android_version}`` is replaced by the device's version."""

    docker_privileged: bool = True
    """Run device containers privileged (Redroid needs it)."""

    docker_network_mode: str = "bridge"
    """``bridge`` publishes the container ports on ``adb_host``; ``host`` makes the device
    listen on its allocated ports directly."""

    docker_adb_container_port: int = Field(default=5555, ge=1, le=65535)
    """Port adbd listens on inside the container (bridge mode)."""

    docker_stream_container_port: int = Field(default=5900, ge=1, le=65535)
    """Port of the screen stream inside the container (bridge mode)."""

    docker_protocol: Literal["adb", "line"] = "adb"
    """How to talk to the device: real ADB (Redroid's adbd, via adb-shell) or the line
    protocol of the fake device agent."""

    docker_pids_limit: int = Field(default=4096, ge=16)
    """Most processes/threads in a device container (Android spawns hundreds)."""

    docker_adb_key_path: Path | None = None
    """RSA key adb-shell authenticates with (created if missing); None tries without auth."""

    init_commands: list[str] = Field(
        default_factory=lambda: [
            "settings put global window_animation_scale 0",
            "settings put global transition_animation_scale 0",
            "settings put global animator_duration_scale 0",
        ]
    )
    """Shell commands run on a real (ADB) device after boot, besides size and density."""

    @model_validator(mode="after")
    def _check_ranges(self) -> DevicesConfig:
        for kind in ("adb", "stream"):
            low, high = getattr(self, f"{kind}_port_min"), getattr(self, f"{kind}_port_max")
            if low > high:
                raise ValueError(f"{kind}_port_min ({low}) is above {kind}_port_max ({high})")
        if not (
            self.adb_port_max < self.stream_port_min or self.stream_port_max < self.adb_port_min
        ):
            raise ValueError("the ADB and stream port ranges overlap")
        return self
