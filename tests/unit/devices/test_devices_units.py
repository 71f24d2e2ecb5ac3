"""Pure parts of the devices service: exports, spec rules, quota arithmetic, agent protocol."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

import cloudphone.devices as devices
from cloudphone.devices.agent import Agent
from cloudphone.devices.config import DevicesConfig, QuotaDefaults
from cloudphone.devices.create import container_name, saga_id_of_container
from cloudphone.devices.links import parse_properties
from cloudphone.devices.quota import Quota, default_limits
from cloudphone.devices.spec import DeviceSpec, Resources, cores_to_millis, validate_name
from cloudphone.domain import InvalidInputError

EXPORTS = [
    "AdbError", "AppInstaller", "InstallResult", "PackageManagerError", "PushError",
    "TransferTimeouts", "UninstallResult", "Container", "DEVICE_CREATE", "DEVICE_DELETE",
    "Device", "DeviceCreation", "DeviceDeletion",
    "DeviceRuntime", "DeviceService", "DeviceSpec", "DeviceStatus", "DevicesConfig",
    "DockerOptions", "DockerRuntime", "Launch", "LocalRuntime", "Quota", "QuotaLimits",
    "Resources", "SweepReport", "Sweeper", "build_create_saga", "build_delete_saga", "metadata",
]  # fmt: skip


def test_public_names_are_locked_and_resolve() -> None:
    """The package exports exactly these names, each importable."""
    assert sorted(devices.__all__) == sorted(EXPORTS)
    for name in EXPORTS:
        assert getattr(devices, name) is not None
    with pytest.raises(AttributeError):
        _ = devices.Nope  # type: ignore[attr-defined]


def test_the_agent_does_not_import_the_database_or_docker_libraries() -> None:
    """Device agents stay light: importing their module pulls no SQLAlchemy nor aiodocker."""
    code = (
        "import sys, cloudphone.devices.agent; "
        "print(sorted(m for m in ('sqlalchemy', 'aiodocker', 'fastapi') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "spec",
    [
        DeviceSpec(cpu_millis=50),
        DeviceSpec(memory_mb=10),
        DeviceSpec(storage_mb=1),
        DeviceSpec(resolution="1080*1920"),
        DeviceSpec(resolution="10x10"),
        DeviceSpec(dpi=700),
        DeviceSpec(android_version="9"),
    ],
)
def test_bad_specs_are_refused(spec: DeviceSpec) -> None:
    with pytest.raises(InvalidInputError):
        spec.validate(["11", "12", "13", "14"])


def test_spec_round_trips_through_saga_data() -> None:
    spec = DeviceSpec(cpu_millis=1500, resolution="720x1280", dpi=320)
    assert DeviceSpec.from_data(spec.to_data()) == spec
    assert (spec.width, spec.height) == (720, 1280)
    assert cores_to_millis(1.5) == 1500


@pytest.mark.parametrize("name", ["", "-x", "a b", "é", "x" * 64])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_name(name)


def test_quota_shortfall_names_every_limit_that_does_not_fit() -> None:
    """Each dimension over its limit is listed, with used, reserved, requested and limit."""
    limits = default_limits(QuotaDefaults(max_devices=2, max_memory_mb=1000))
    quota = Quota("u", limits, used=Resources(1, 1000, 600, 100), reserved=Resources(1, 0, 0, 0))
    reasons = quota.shortfall(DeviceSpec(cpu_millis=1000, memory_mb=500, storage_mb=200))
    assert reasons == [
        "devices: 1 used + 1 reserved + 1 requested > limit 2",
        "memory_mb: 600 used + 0 reserved + 500 requested > limit 1000",
    ]
    assert quota.available == Resources(0, 7000, 400, 65436)
    assert quota.shortfall(replace(DeviceSpec(), cpu_millis=5000))[-1] == (
        "cpu_cores: 5 requested > per-device maximum 4"
    )


def test_quota_messages_speak_the_apis_units() -> None:
    """CPU is stored in millicores but the API (and so every message) speaks cores."""
    limits = replace(default_limits(QuotaDefaults()), max_cpu_millis=3000)
    quota = Quota("u", limits, used=Resources(1, 1500, 0, 0), reserved=Resources(0, 250, 0, 0))
    reasons = quota.shortfall(DeviceSpec(cpu_millis=2000))
    assert reasons == ["cpu_cores: 1.5 used + 0.25 reserved + 2 requested > limit 3"]
    with pytest.raises(InvalidInputError) as over:
        limits.check_device(DeviceSpec(cpu_millis=4500))
    assert over.value.message == "cpu_cores 4.5 exceeds the per-device maximum 4"


def test_config_refuses_overlapping_or_inverted_port_ranges() -> None:
    with pytest.raises(ValueError, match="overlap"):
        DevicesConfig(adb_port_min=20000, adb_port_max=21000, stream_port_min=20500)
    with pytest.raises(ValueError, match="above"):
        DevicesConfig(adb_port_min=21000, adb_port_max=20000)


def test_container_names_come_from_the_saga_id() -> None:
    assert container_name("abc") == "cloudphone-abc"
    assert saga_id_of_container("cloudphone-abc") == "abc"
    assert saga_id_of_container("something-else") is None


def test_agent_answers_the_line_protocol() -> None:
    """CNXN? echoes the nonce with the serial; SETPROP/GETPROP keep values; ro.* is read-only."""
    agent = Agent("dev-1", "14")
    serial_line = agent.answer("CNXN? n0")
    assert serial_line.startswith("CNXN dev-1 n0 device::")
    assert parse_properties(serial_line.split(" ", 3)[3])["ro.build.version.sdk"] == "34"
    assert agent.answer("PING") == "PONG"
    assert agent.answer("SETPROP persist.x 1x2@3") == "OK"
    assert agent.answer("GETPROP persist.x") == "PROP persist.x 1x2@3"
    assert agent.answer("GETPROP unset.key") == "PROP unset.key "
    assert agent.answer("SETPROP ro.serialno evil") == "ERR bad property"
    assert agent.answer("SETPROP BAD value") == "ERR bad property"
    assert agent.answer("REBOOT") == "ERR unknown"


async def test_agent_shell_understands_the_init_commands_and_reports_exit_status() -> None:
    """Over ADB: getprop, wm size/density set the display, unknown commands exit 127."""
    agent = Agent("dev-1", "13")
    assert await agent.shell.output("getprop sys.boot_completed") == "1\n"
    assert await agent.shell.output("getprop ro.boot.serialno") == "dev-1\n"
    assert await agent.shell.output("wm size 720x1280; echo RC=$?") == "RC=0\n"
    assert await agent.shell.output("wm density 320") == ""
    assert agent.props["persist.cloudphone.display"] == "720x1280@320"
    assert (await agent.shell.output("reboot; echo RC=$?")).endswith("RC=127\n")
