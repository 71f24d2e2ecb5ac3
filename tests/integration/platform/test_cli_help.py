"""``cloudphone --help`` answers without importing the platform (it took 3 s when it did)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "sqlalchemy",
    "fastapi",
    "starlette",
    "uvicorn",
    "alembic",
    "stripe",
    "aiobotocore",
    "botocore",
    "aiodocker",
    "aiohttp",
    "asyncpg",
    "psycopg",
    "jwt",
    "prometheus_client",
    "cloudphone.saga",
    "cloudphone.platform",
    "cloudphone.api",
    "cloudphone.apps",
    "cloudphone.billing",
    "cloudphone.devices",
    "cloudphone.settings",
)
"""Modules the help of a command has no use for (each costs tens to hundreds of ms)."""

_SHOW_MODULES = """
import json, sys
from cloudphone.cli import app
try:
    app(sys.argv[1:], prog_name="cloudphone")
except SystemExit as done:
    code = done.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["sagas", "--help"], ["sagas", "list", "--help"], ["serve", "--help"]],
    ids=" ".join,
)
def test_help_imports_none_of_the_heavy_modules(argv: list[str]) -> None:
    """A fresh interpreter answers --help with Typer and Rich only."""
    done = subprocess.run(
        [sys.executable, "-c", _SHOW_MODULES, *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    assert "Usage" in done.stdout
    loaded = [
        name
        for name in report["modules"]
        if any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY)
    ]
    assert loaded == []


def test_top_level_help_does_not_even_import_pydantic() -> None:
    """Settings validation (pydantic) is loaded by the commands that read settings."""
    done = subprocess.run(
        [sys.executable, "-c", _SHOW_MODULES, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    modules = json.loads(done.stderr.strip().splitlines()[-1])["modules"]
    assert "pydantic" not in modules
