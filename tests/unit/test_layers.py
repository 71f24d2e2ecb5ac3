"""The dependency rule, read from the source: the APK library is a leaf, services are apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cloudphone

SRC = Path(cloudphone.__file__).resolve().parent


def imported_modules(package: str) -> set[str]:
    """Every ``cloudphone...`` module a package's files import (absolute imports only)."""
    found: set[str] = set()
    for path in (SRC / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "cloudphone"}


def test_apk_library_imports_nothing_else_from_cloudphone() -> None:
    """``cloudphone.apk`` is a leaf: both services use it, it uses neither."""
    assert {m for m in imported_modules("apk") if not m.startswith("cloudphone.apk")} == set()


@pytest.mark.parametrize(("service", "other"), [("devices", "apps"), ("apps", "devices")])
def test_a_service_never_imports_the_other(service: str, other: str) -> None:
    """The devices service reads APKs through ``cloudphone.apk``, never through the apps service."""
    strays = {m for m in imported_modules(service) if m.startswith(f"cloudphone.{other}")}
    assert strays == set()


@pytest.mark.parametrize("service", ["apps", "devices"])
def test_both_services_read_apks_through_the_leaf_library(service: str) -> None:
    """Uploads (apps) and ``pm install`` on the agent (devices) parse with ``cloudphone.apk``."""
    assert "cloudphone.apk" in imported_modules(service)


def test_installs_sit_on_the_devices_side_and_never_import_apps() -> None:
    """``cloudphone.installs`` uses devices (its table is about them), reads APKs by a port.

    Besides those, only the housekeeping loop every service shares (``cloudphone.periodic``).
    """
    found = imported_modules("installs")
    assert {m for m in found if m.startswith("cloudphone.apps")} == set()
    assert any(m.startswith("cloudphone.devices") for m in found)
    allowed = {"devices", "domain", "installs", "periodic", "saga"}
    assert {m.split(".")[1] for m in found} <= allowed


@pytest.mark.parametrize("service", ["apps", "devices", "saga"])
def test_nothing_below_imports_installs(service: str) -> None:
    """Arrows point down: neither service (nor the engine) knows installs exist."""
    assert {m for m in imported_modules(service) if m.startswith("cloudphone.installs")} == set()
