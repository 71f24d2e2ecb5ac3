"""The built wheel, installed without extras into a fresh virtualenv, serves and migrates.

Builds the wheel from a copy of the sources (``python -m build --wheel``), installs it into a
new virtualenv (dependencies from the pip cache or the package index), then runs that
virtualenv's ``cloudphone serve`` on a temporary data directory and a free port: ``/healthz``
answers and a demo saga completes, so the Alembic migrations shipped inside the package ran.
Choosing an adapter whose extra is missing fails at start, naming the extra.

Select it alone with ``-m packaging``; it runs in the normal suite too.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.server import REPO_ROOT, TEST_SECRET, auth, free_port
from tests.support.waiting import wait_sync

pytestmark = pytest.mark.packaging

INSTALL_TIMEOUT = 240


@dataclass(frozen=True)
class Installed:
    """A virtualenv with the wheel (and no extras) installed."""

    wheel: Path
    venv: Path

    @property
    def cloudphone(self) -> Path:
        """Its ``cloudphone`` script."""
        return self.venv / "bin" / "cloudphone"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of the installed CLI: nothing pointing back at the source tree."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLOUDPHONE_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(PYTHONUNBUFFERED="1", CLOUDPHONE_JWT_SECRET=TEST_SECRET, **extra)
    return env


def run(args: list[str | Path], *, cwd: Path, timeout: float, **extra_env: str) -> str:
    """Run a command to completion; its output (fails the test with it on a non-zero exit)."""
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_env(**extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel from a copy of the sources and install it into a new virtualenv."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(
        REPO_ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    run([sys.executable, "-m", "build", "--wheel", "--outdir", root / "dist"], cwd=source,
        timeout=INSTALL_TIMEOUT)  # fmt: skip
    (wheel,) = (root / "dist").glob("cloudphone-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=root, timeout=60)
    run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", wheel],
        cwd=root, timeout=INSTALL_TIMEOUT)  # fmt: skip
    return Installed(wheel, venv)


def test_the_wheel_ships_the_migrations_and_only_runtime_dependencies(
    installed: Installed,
) -> None:
    """Every migration script is inside the wheel; httpx and the adapters' SDKs are extras."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(wheel.read(metadata_name))
    shipped = {n for n in names if n.startswith("cloudphone/migrations/")}
    in_tree = {
        p.relative_to(REPO_ROOT / "src").as_posix()
        for p in (REPO_ROOT / "src" / "cloudphone" / "migrations").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert in_tree <= shipped
    assert "cloudphone/migrations/script.py.mako" in shipped
    runtime = [r for r in metadata.get_all("Requires-Dist", []) if "extra ==" not in r]
    names_only = {r.split(">")[0].split("[")[0].split("<")[0].strip().lower() for r in runtime}
    assert names_only.isdisjoint(
        {"httpx", "stripe", "aiohttp", "aiobotocore", "aiodocker", "asyncpg", "psycopg"}
    )
    assert set(metadata.get_all("Provides-Extra", [])) >= {
        "postgres", "s3", "stripe", "docker", "otel", "all", "dev",
    }  # fmt: skip


@pytest.fixture
def served(installed: Installed, tmp_path: Path) -> Iterator[str]:
    """The installed ``cloudphone serve`` on a temporary data directory; its base URL."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(installed.cloudphone), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=clean_env(CLOUDPHONE_DATA_DIR=str(tmp_path / "var"), CLOUDPHONE_LOG_FORMAT="json"),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    base_url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"serve exited {server.returncode}:\n{log_path.read_text()}")
        try:
            return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_sync(healthy, timeout=60, interval=0.1, what="the installed serve answers /healthz")
        yield base_url
    finally:
        server.terminate()  # by its pid: SIGTERM, the graceful path
        try:
            assert server.wait(timeout=30) == 0, log_path.read_text()
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()


def test_the_installed_package_serves_and_completes_a_saga(
    installed: Installed, served: str
) -> None:
    """From the wheel alone: migrations run, /healthz answers, a demo saga completes."""
    code = "import cloudphone, sys; print(cloudphone.__file__)"
    where = run([installed.venv / "bin" / "python", "-c", code], cwd=installed.venv, timeout=30)
    assert Path(where.strip()).is_relative_to(installed.venv)
    alice = auth("alice")
    started = httpx.post(f"{served}/demo", json={"message": "from the wheel"}, headers=alice)
    assert started.status_code == 202, started.text
    saga_url = f"{served}/sagas/{started.json()['id']}"

    seen: list[dict[str, object]] = []

    def finished() -> bool:
        seen.append(httpx.get(saga_url, headers=alice, timeout=5).json())
        return seen[-1]["status"] in ("COMPLETED", "COMPENSATED", "FAILED")

    wait_sync(finished, timeout=30, interval=0.1, what="the demo saga finished")
    assert seen[-1]["status"] == "COMPLETED", seen[-1]


@pytest.mark.parametrize(
    ("setting", "extra"),
    [
        ({"CLOUDPHONE_BILLING__PROVIDER": "stripe"}, "stripe"),
        ({"CLOUDPHONE_APPS__STORAGE": "s3"}, "s3"),
        ({"CLOUDPHONE_DEVICES__RUNTIME": "docker"}, "docker"),
        ({"CLOUDPHONE_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none"}, "postgres"),
    ],
    ids=["stripe", "s3", "docker", "postgres"],
)
def test_an_adapter_without_its_extra_names_the_extra(
    installed: Installed, tmp_path: Path, setting: dict[str, str], extra: str
) -> None:
    """`serve` exits 2 at once with ``install cloudphone[<extra>]``, not an ImportError."""
    done = subprocess.run(
        [str(installed.cloudphone), "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=clean_env(CLOUDPHONE_DATA_DIR=str(tmp_path / "var"), **setting),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"install cloudphone[{extra}]" in done.stderr
    assert next(iter(setting)) in done.stderr
    assert "Traceback" not in done.stderr
