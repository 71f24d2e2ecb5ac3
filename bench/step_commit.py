"""A transactional step's last two round trips, sent apart or together (bench/README.md).

On one raw asyncpg connection, each iteration is a transactional step with a business write:
BEGIN, a business INSERT, the fenced progress write (UPDATE by id, epoch and ``last_seq``
chained with the INSERT of two events, as the engine's) and COMMIT. ``apart`` sends the
progress write as a typed extended-protocol statement and COMMIT after it (the engine today:
4 round trips); ``together`` sends both in one simple-protocol message (3 round trips), the
write as a call of a session-temporary PL/pgSQL function with literal arguments that raises
when fenced and answers with a NOTICE (asyncpg drops a simple query's rows). Rounds alternate
ABBA; prints client CPU (user + system), the backend's CPU and wall time per step, medians.

    python bench/step_commit.py --steps 3000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TAG = f"bench_step_commit_{os.getpid()}"

WRITE = f"""
WITH u AS (
    UPDATE {TAG}_runs SET status = $3, last_seq = last_seq + $5, updated_at = now()
    WHERE id = $1 AND epoch = $2 AND ($4::bigint IS NULL OR last_seq = $4)
    RETURNING id, last_seq, cancel_requested
), e AS (
    INSERT INTO {TAG}_events (saga_id, seq, detail, at)
    SELECT u.id, u.last_seq - $5 + ev.i, ev.d, ev.a
    FROM u CROSS JOIN unnest($6::jsonb[], $7::timestamptz[]) WITH ORDINALITY AS ev(d, a, i)
)
SELECT last_seq, cancel_requested FROM u
"""

FUNCTION = f"""
CREATE FUNCTION pg_temp.{TAG}_write(p1 text, p2 int, p3 text, p4 bigint, p5 int,
    p6 jsonb[], p7 timestamptz[]) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE written bigint;
BEGIN
    {
    WRITE.replace("$", "p").replace(
        "SELECT last_seq, cancel_requested FROM u", "SELECT u.last_seq INTO written FROM u"
    )
};
    IF NOT FOUND THEN RAISE EXCEPTION 'fenced' USING ERRCODE = 'P0001'; END IF;
    RAISE NOTICE '%', written;
END $f$
"""


def literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings is on)."""
    return "'" + value.replace("'", "''") + "'"


def array(values: list[str], kind: str) -> str:
    return f"ARRAY[{','.join(literal(v) for v in values)}]::{kind}[]"


async def one_round(
    conn: asyncpg.Connection, notices: list[str], mode: str, steps: int
) -> tuple[float, ...]:
    pid = conn.get_server_pid()
    seq = int(await conn.fetchval(f"SELECT last_seq FROM {TAG}_runs"))
    backend0, usage0, wall0 = (
        backend_cpu(pid),
        resource.getrusage(resource.RUSAGE_SELF),
        time.perf_counter(),
    )
    for i in range(steps):
        await conn.execute("BEGIN")
        await conn.execute(f"INSERT INTO {TAG}_business (v) VALUES ($1)", str(i))
        now = datetime.now(UTC)
        details = [json.dumps({"step": "T1", "attempt": 1, "i": i})] * 2
        if mode == "apart":
            row = await conn.fetchrow(WRITE, "r", 1, "running", seq, 2, details, [now, now])
            await conn.execute("COMMIT")
            seq = row["last_seq"]
        else:
            call = (
                f"SELECT pg_temp.{TAG}_write({literal('r')}, 1, {literal('running')}, {seq}, 2, "
                f"{array(details, 'jsonb')}, {array([now.isoformat()] * 2, 'timestamptz')}); COMMIT"
            )
            assert await conn.execute(call) == "COMMIT"
            seq = int(notices.pop())
    wall, usage = time.perf_counter() - wall0, resource.getrusage(resource.RUSAGE_SELF)
    client = usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime
    scale = 1e6 / steps
    return client * scale, (backend_cpu(pid) - backend0) * scale, wall * scale


async def fenced_rolls_back(conn: asyncpg.Connection) -> None:
    """A fenced ``together`` write raises, and its business row does not commit."""
    await conn.execute("BEGIN")
    await conn.execute(f"INSERT INTO {TAG}_business (v) VALUES ('fenced')")
    stale = f"SELECT pg_temp.{TAG}_write('r', 2, 'x', 0, 0, '{{}}', '{{}}'); COMMIT"
    try:
        await conn.execute(stale)
    except asyncpg.RaiseError:
        await conn.execute("ROLLBACK")
    else:
        raise AssertionError("a fenced write committed")
    assert await conn.fetchval(f"SELECT count(*) FROM {TAG}_business") == 0


def backend_cpu(pid: int) -> float:
    """The backend's CPU seconds (PostgreSQL on this machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(url: str, steps: int, rounds: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f"CREATE TABLE {TAG}_runs (id text PRIMARY KEY, epoch int, status text, "
            "last_seq bigint, cancel_requested bool, updated_at timestamptz);"
            f"CREATE TABLE {TAG}_events (saga_id text, seq bigint, detail jsonb, at timestamptz, "
            "PRIMARY KEY (saga_id, seq));"
            f"CREATE TABLE {TAG}_business (id serial PRIMARY KEY, v text);"
            f"INSERT INTO {TAG}_runs VALUES ('r', 1, 'running', 0, false, now())"
        )
        await conn.execute(FUNCTION)
        notices: list[str] = []
        conn.add_log_listener(lambda _conn, message: notices.append(message.message))
        await fenced_rolls_back(conn)
        results: dict[str, list[tuple[float, ...]]] = {"apart": [], "together": []}
        for _ in range(rounds):
            for mode in ("apart", "together", "together", "apart"):
                results[mode].append(await one_round(conn, notices, mode, steps))
        for mode, rows in results.items():
            client, backend, wall = (statistics.median(col) for col in zip(*rows, strict=True))
            print(
                f"{mode:9} client CPU {client:4.0f} µs  backend CPU {backend:4.0f} µs  "
                f"wall {wall:5.0f} µs per step (medians of {len(rows)} rounds)"
            )
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {TAG}_runs, {TAG}_events, {TAG}_business")
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=URL, help="asyncpg URL (default: local postgres)")
    parser.add_argument("--steps", type=int, default=3000, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="ABBA rounds (4 runs each)")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.steps, args.rounds))
