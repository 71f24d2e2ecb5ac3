"""What one PostgreSQL can commit, for the scale-out model in bench/README.md (pgbench).

On a fresh database (dropped afterwards), ``pgbench`` runs four one-statement transactions
from 1 and from 32 clients, ``--duration`` seconds each:

- ``insert``: one row INSERTed (a saga start, a business write);
- ``update``: one of 100,000 rows UPDATEd by primary key (a progress write: each run's row is
  written only by its owner, so writers meet no row lock);
- ``hot_row``: the same row UPDATEd by everyone (what a shared counter would cost: one
  row lock, held through each commit's WAL flush);
- ``notify``: an INSERT and a ``pg_notify`` in one statement (a start announced to
  workers: PostgreSQL serialises notifying commits on one lock, held through the flush).

    python bench/pg_limits.py --duration 10
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from sqlalchemy.engine import make_url  # noqa: E402
from tests.support.databases import (  # noqa: E402 - after the path tweak above
    create_postgres_database,
    drop_postgres_database,
)

SETUP = """
CREATE TABLE pgb_insert (id bigserial PRIMARY KEY, v int NOT NULL, at timestamptz DEFAULT now());
CREATE TABLE pgb_rows (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO pgb_rows SELECT g, 0 FROM generate_series(1, 100000) g;
CREATE TABLE pgb_hot (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO pgb_hot VALUES (1, 0);
"""
SCRIPTS = {
    "insert": "INSERT INTO pgb_insert (v) VALUES (1);",
    "update": "\\set id random(1, 100000)\nUPDATE pgb_rows SET v = v + 1 WHERE id = :id;",
    "hot_row": "UPDATE pgb_hot SET v = v + 1 WHERE id = 1;",
    # One statement, as the engine's insert sends it (a CTE whose SELECT calls pg_notify).
    "notify": "WITH i AS (INSERT INTO pgb_insert (v) VALUES (1) RETURNING id)"
    " SELECT pg_notify('pgb_channel', 'x') FROM i;",
}


def pgbench(dsn: list[str], script: Path, clients: int, duration: int) -> float:
    done = subprocess.run(
        ["pgbench", "-n", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(duration),
         "-f", str(script), *dsn],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    match = re.search(r"tps = ([\d.]+)", done.stdout)
    if match is None:
        raise RuntimeError(done.stdout + done.stderr)
    return float(match[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 32])
    args = parser.parse_args()
    url = make_url(create_postgres_database("pglimits"))
    dsn = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U",
           url.username or "postgres", url.database or ""]  # fmt: skip
    try:
        setup = ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-c", SETUP, "-c", "VACUUM ANALYZE"]
        subprocess.run([*setup, *dsn[:-1], "-d", dsn[-1]], check=True, env=os.environ)
        print("| transaction | " + " | ".join(f"{c} client(s)" for c in args.clients) + " |")
        print("|---|" + "---|" * len(args.clients))
        with tempfile.TemporaryDirectory() as tmp:
            for name, sql in SCRIPTS.items():
                script = Path(tmp) / f"{name}.sql"
                script.write_text(sql + "\n")
                rates = [pgbench(dsn, script, c, args.duration) for c in args.clients]
                print(f"| {name} | " + " | ".join(f"{r:,.0f}/s" for r in rates) + " |", flush=True)
    finally:
        drop_postgres_database(url.render_as_string(hide_password=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
