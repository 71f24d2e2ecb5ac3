"""``bench/peers.py`` keeps working: its quick mode on cloudphone alone, at a tiny size.

No timing is asserted (speed is measured in ``bench/``): only that every cell ran all its
sagas, wrote its business rows, counted transactions, and that the run's database is gone
afterwards, also when a child fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.support.databases import drop_postgres_database, postgres_admin_url

pytestmark = pytest.mark.postgres

BENCH = Path(__file__).resolve().parents[2] / "bench" / "peers.py"


def databases_named(prefix: str) -> list[str]:
    admin = make_url(postgres_admin_url()).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{prefix}%",)
        ).fetchall()
    return [row[0] for row in rows]


@pytest.fixture
def prefix() -> Iterator[str]:
    """The run's database prefix; what a killed bench left is dropped after the test."""
    name = f"peers_t{uuid.uuid4().hex[:6]}"
    yield name
    admin = make_url(postgres_admin_url())
    for database in databases_named(name):
        drop_postgres_database(admin.set(database=database).render_as_string(False))


def bench(tmp_path: Path, prefix: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--systems",
            "cloudphone",
            "--sagas",
            "6",
            "--db-prefix",
            prefix,
            "--out",
            str(tmp_path),
            "--tag",
            "run",
            "--no-plot",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=50,  # below the test's timeout, so the prefix fixture still drops what is left
        check=False,
    )


def test_quick_run_measures_every_cell_and_drops_its_database(tmp_path: Path, prefix: str) -> None:
    done = bench(tmp_path, prefix)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "run.json").read_text())
    cells = {(c["shape"], c["concurrency"]): c for c in report["cells"]}
    assert set(cells) == {(s, c) for s in ("noop", "write") for c in (1, 8, 64)}
    for (shape, _), cell in cells.items():
        assert cell["system"] == "cloudphone"
        assert cell["sagas"] == 6
        assert cell["business_rows"] == (2 * (6 + cell["warmup"]) if shape == "write" else 0)
        assert cell["throughput"] > 0
        assert cell["p50_ms"] <= cell["p99_ms"]
        assert cell["commits_per_saga"] > 0
        assert cell["cpu_ms_per_saga"] > 0
    assert len(report["summary"]) == 6
    assert "| noop | 1 | cloudphone |" in done.stdout
    assert databases_named(prefix) == []


def test_a_failed_child_still_drops_the_database(tmp_path: Path, prefix: str) -> None:
    done = bench(tmp_path, prefix, "--child-timeout", "0.05")
    assert done.returncode != 0
    assert "TimeoutExpired" in done.stderr
    assert databases_named(prefix) == []
    assert not (tmp_path / "run.json").exists()
