"""How long ``cloudphone --help`` takes, and what ``import cloudphone.cli`` costs.

Runs each command several times in fresh interpreters (wall time: median and fastest), then
``python -X importtime -c "import cloudphone.cli"`` once and prints the cumulative import time
of the CLI and of its slowest top-level imports.

    python bench/cli_startup.py
    python bench/cli_startup.py --runs 11

Target (issue 9): ``cloudphone --help`` in < 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["sagas", "list", "--help"], ["config", "show", "--help"])


def wall_times(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cloudphone", *argv], capture_output=True, check=True)
        times.append(time.perf_counter() - began)
    return times


def import_times() -> list[tuple[int, str]]:
    """(cumulative µs, module) of ``import cloudphone.cli`` and the modules it imports directly."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import cloudphone.cli"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 1:
            rows.append((int(cumulative), name.strip()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    for argv in COMMANDS:
        times = wall_times(argv, args.runs)
        print(
            f"cloudphone {' '.join(argv)}: median {statistics.median(times):.2f} s, "
            f"fastest {min(times):.2f} s ({args.runs} runs)"
        )
    rows = import_times()
    total = next(us for us, name in rows if name == "cloudphone.cli")
    print(f"import cloudphone.cli: {total / 1000:.0f} ms cumulative; slowest direct imports:")
    for us, name in sorted(rows, reverse=True)[1:8]:
        print(f"  {us / 1000:7.1f} ms  {name}")


if __name__ == "__main__":
    main()
