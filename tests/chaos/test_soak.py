"""The chaos soak's CI profile: the whole platform under mixed load and faults, every invariant.

``python -m tests.chaos.soak`` runs the same soak from the command line (and the long profile);
see tests/chaos/README.md. The seed is fixed (``CLOUDPHONE_SOAK_SEED`` picks another), so a
failure names the schedule that found it; the table and the JSON report are written either way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.chaos.soak import DEFAULT_SEED, soak
from tests.chaos.soak_plan import CI

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]


@pytest.mark.timeout(240)
async def test_the_platform_keeps_every_invariant_under_mixed_load_and_faults(
    tmp_path: Path,
) -> None:
    """≥ 300 sagas, ≥ 10 worker kills, the API killed, PostgreSQL and S3 restarted: all hold."""
    seed = int(os.environ.get("CLOUDPHONE_SOAK_SEED", DEFAULT_SEED))
    report = await soak(CI, seed, tmp_path / "soak")
    table = report.table()
    print(table)
    (tmp_path / "soak-report.json").write_text(json.dumps(report.as_dict(), default=str))
    assert report.total_sagas >= CI.min_sagas, table
    assert sum(f["kind"] == "kill_worker" for f in report.faults) >= 10, table
    assert report.ok, table
