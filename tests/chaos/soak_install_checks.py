"""The soak's verdict on installs: the rows, the devices themselves and the install spool agree.

After the drain no run is active, so every ``device_apps`` row of a live device must be
INSTALLED, or held by a run that FAILED with a reason (the listing shows it FAILED, for an
operator). Each RUNNING device is asked over ADB (``pm list packages --show-versioncode``, as a
user would, like tests/integration/installs) and must have exactly its INSTALLED rows, at their
versions: no package without a row, no INSTALLED row without its package (a FAILED row's
package may be there or not: that is what "not known" means). No row outlives its device. The
install spool (``<data_dir>/installs``) keeps no file of a terminal run, except a FAILED one
(its compensation stopped before FETCH_APK's, which deletes the file; the workers' spool
sweeper removes it too once untouched for ``install_spool_grace``, as an operator's retry
fetches the APK again, so it may be there or not).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path
from typing import Any

import psycopg

from cloudphone.installs.spool import ApkSpool
from tests.chaos.soak_checks import Check
from tests.support.installs_stack import adb_shell
from tests.support.soak_stack import DATABASE, SoakStack

INSTALL_SAGAS = ("app_install", "app_uninstall")
LIVE = ("RUNNING", "STOPPED", "RESTARTING", "CREATING", "DELETING")
_SAGA_ID = re.compile(r"[0-9a-f-]{36}")
DURING_INSTALL = ", during "
"""What a worker kill's detail says when it hit a worker running an install."""


def installing_worker(stack: SoakStack, within: float) -> tuple[str, str] | None:
    """A worker running an ``app_install`` or ``app_uninstall`` now, waited ``within`` seconds.

    Returns its name and a note for the fault's detail, or None (none ran, or the database
    is down).
    """
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.Error):
            with psycopg.connect(stack.postgres.libpq_url(DATABASE), connect_timeout=2) as conn:
                row = conn.execute(
                    "SELECT owner, saga_type, current_step FROM saga_runs "
                    "WHERE saga_type = ANY(%s) AND status IN ('RUNNING', 'COMPENSATING') "
                    "AND owner = ANY(%s) AND lease_expires_at > now() "
                    "ORDER BY current_step = 'PUSH_AND_INSTALL' DESC LIMIT 1",
                    (list(INSTALL_SAGAS), sorted(stack.workers)),
                ).fetchone()
            if row is not None:
                return str(row[0]), f"{DURING_INSTALL}{row[1]} at {row[2]}"
        time.sleep(0.1)  # polling the database for an install in flight: no event to wait on
    return None


def install_checks(stack: SoakStack) -> list[Check]:
    """Every installs invariant."""
    with psycopg.connect(stack.postgres.libpq_url(DATABASE)) as conn:
        return _checks(conn, stack)


def _checks(conn: psycopg.Connection[Any], stack: SoakStack) -> list[Check]:
    unsettled = [
        f"{device} {package} {status} (run {run} {run_status})"
        for device, package, status, run, run_status in conn.execute(
            "SELECT a.device_id, a.package_name, a.status, a.saga_id, r.status "
            "FROM device_apps a JOIN devices d ON d.id = a.device_id "
            "LEFT JOIN saga_runs r ON r.id = a.saga_id WHERE d.status = ANY(%s) AND NOT "
            "(a.status = 'INSTALLED' OR (r.status = 'FAILED' AND "
            "coalesce(r.error->>'message', '') <> ''))",
            (list(LIVE),),
        ).fetchall()
    ]
    orphans = [
        f"{device} {package}"
        for device, package in conn.execute(
            "SELECT a.device_id, a.package_name FROM device_apps a "
            "LEFT JOIN devices d ON d.id = a.device_id "
            "WHERE d.id IS NULL OR d.status <> ALL(%s)",
            (list(LIVE),),
        ).fetchall()
    ]
    rows = conn.execute(
        "SELECT count(*) FROM device_apps a JOIN devices d ON d.id = a.device_id "
        "WHERE d.status = ANY(%s)",
        (list(LIVE),),
    ).fetchone()
    drift, asked = asyncio.run(_devices_match_rows(conn))
    stray = _spool_leftovers(conn, Path(stack.env["CLOUDPHONE_DATA_DIR"]) / "installs")
    return [
        Check(
            f"device_apps rows neither INSTALLED nor FAILED with a reason "
            f"({rows[0] if rows else 0} rows)",
            len(unsettled), "0", not unsettled, "; ".join(unsettled[:5]),
        ),
        Check(
            f"devices whose packages (over ADB) are not their INSTALLED rows ({asked} asked)",
            len(drift), "0", not drift, "; ".join(drift[:5]),
        ),
        Check("installation rows of deleted devices", len(orphans), "0", not orphans,
              "; ".join(orphans[:5])),
        Check("install spool files of runs that are over (but FAILED ones)", len(stray), "0",
              not stray, "; ".join(stray[:5])),
    ]  # fmt: skip


async def _devices_match_rows(conn: psycopg.Connection[Any]) -> tuple[list[str], int]:
    """Each RUNNING device's ``pm list packages`` against its rows; (mismatches, devices asked)."""
    devices = conn.execute(
        "SELECT id, adb_host, adb_port FROM devices WHERE status = 'RUNNING'"
    ).fetchall()
    rows = conn.execute(
        "SELECT a.device_id, a.package_name, a.status, a.version_code FROM device_apps a "
        "JOIN devices d ON d.id = a.device_id WHERE d.status = 'RUNNING'"
    ).fetchall()
    drift = []
    for device_id, host, port in devices:
        mine = [(p, s, v) for d, p, s, v in rows if d == device_id]
        installed = {p: v for p, s, v in mine if s == "INSTALLED"}
        unknown = {p for p, s, _ in mine if s != "INSTALLED"}  # FAILED runs (the check above)
        device = {"adb_host": host, "adb_port": port}
        on_device = _parse(await adb_shell(device, "pm list packages --show-versioncode"))
        shown = {p: v for p, v in on_device.items() if p not in unknown}
        if shown != installed:
            drift.append(f"{device_id}: device {shown}, rows {installed}")
    return drift, len(devices)


def _parse(listing: str) -> dict[str, int]:
    """``package:NAME versionCode:N`` lines → name → version code."""
    found = {}
    for line in listing.splitlines():
        match = re.fullmatch(r"package:(\S+) versionCode:(\d+)", line.strip())
        if match:
            found[match[1]] = int(match[2])
    return found


def _spool_leftovers(conn: psycopg.Connection[Any], directory: Path) -> list[str]:
    """Spool files (whole or partial) whose run is not FAILED (after the drain: is over)."""
    names = ApkSpool(directory).files()
    runs = {name: match[0] if (match := _SAGA_ID.search(name)) else "" for name in names}
    failed = {
        str(row[0])
        for row in conn.execute(
            "SELECT id FROM saga_runs WHERE status = 'FAILED' AND id = ANY(%s)",
            (list(runs.values()),),
        ).fetchall()
    }
    return [name for name, run in runs.items() if run not in failed]
