"""What every system in ``bench/peers.py`` shares: the cell to run, closed loops, probes.

A *cell* is one measurement: one system, one shape, one concurrency, N sagas on the system's
own PostgreSQL database. Each system's child process (see ``peers.py --child``) runs its cells
with the same closed loop: ``concurrency`` clients, each starting a saga and waiting for its
completion before starting the next, until N sagas are done.

The PostgreSQL probe reads ``pg_stat_database`` and ``pg_stat_activity`` over a connection to
the *admin* database, so its own queries never count as the bench database's transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

SHAPES = ("noop", "write")
"""``noop``: four no-op steps; ``write``: T1 and T3 each INSERT one business row."""

STEPS = ("T1", "S2", "T3", "S4")
"""T1 and T3 are the transactional steps (where a system has them), S2 and S4 plain ones."""

BUSINESS_TABLE = "peers_rows"
BUSINESS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {BUSINESS_TABLE} ("
    " id bigserial PRIMARY KEY, run_id text NOT NULL, step text NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now())"
)
BUSINESS_INSERT = f"INSERT INTO {BUSINESS_TABLE} (run_id, step) VALUES (%(run)s, %(step)s)"
"""The business write of T1 and T3 (psycopg placeholders; SQLAlchemy ``text`` uses :name)."""

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cell:
    """One measurement a child runs."""

    system: str
    shape: str
    concurrency: int
    sagas: int
    warmup: int
    round: int
    url: str
    """SQLAlchemy URL of the system's database (``postgresql+asyncpg://…``)."""
    admin_url: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def database(self) -> str:
        name = make_url(self.url).database
        assert name is not None
        return name


@dataclass
class Timing:
    """What a closed loop saw: per-saga latency and the window's ends."""

    latencies_ms: list[float]
    first_start: float
    last_end: float

    @property
    def elapsed_s(self) -> float:
        return self.last_end - self.first_start


@dataclass
class CellResult:
    """One cell's numbers (JSON line from the child to the parent)."""

    system: str
    shape: str
    concurrency: int
    round: int
    sagas: int
    warmup: int
    elapsed_s: float
    throughput: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    cpu_ms_per_saga: float
    """Client process CPU (all threads) over the timed window, per saga."""
    pg_cpu_ms_per_saga: float
    """CPU of the bench database's PostgreSQL backends over the window, per saga."""
    server_cpu_ms_per_saga: float
    """CPU of a separate server (Temporal's) over the window, per saga; NaN when none."""
    commits_per_saga: float
    """``xact_commit`` delta of the bench database over the cell (start-up, warm-up and
    shut-down included) divided by every saga run in it (warm-up included)."""
    rollbacks_per_saga: float
    write_commits_per_saga: float
    """Committed write transactions of the database over the timed window, per saga: COMMIT
    records in the WAL whose transaction wrote to the database (``pg_waldump``; NaN when the
    WAL cannot be read here). Unlike ``commits_per_saga`` it leaves out read-only ones."""
    wal_bytes_per_saga: float
    """WAL those transactions (and the database's hint-bit and page images) wrote, per saga."""
    business_rows: int
    """Rows the cell wrote to the business table (2 per saga for ``write``, else 0)."""
    options: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


def libpq(url: str) -> str:
    """A SQLAlchemy URL as a libpq one (for psycopg)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_driver(url: str, driver: str) -> str:
    """The same database through another SQLAlchemy driver (``postgresql+psycopg``…)."""
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


def wait_timeout(engine_wait: Callable[..., Any], seconds: float) -> Any:
    """The ``timeout=`` an engine's ``wait`` takes: seconds today, a timedelta soon."""
    import inspect
    from datetime import timedelta

    parameter = inspect.signature(engine_wait).parameters["timeout"]
    takes_timedelta = "timedelta" in str(parameter.annotation) or isinstance(
        parameter.default, timedelta
    )
    return timedelta(seconds=seconds) if takes_timedelta else seconds


# -- closed loops ---------------------------------------------------------------------------


async def run_async(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> Timing:
    """``concurrency`` tasks, each running ``one(i)`` (start + wait) until n are done."""
    counter = itertools.count()
    latencies: list[float] = []
    starts: list[float] = []
    ends: list[float] = []

    async def client() -> None:
        while (i := next(counter)) < n:
            t0 = time.perf_counter()
            await one(i)
            t1 = time.perf_counter()
            latencies.append((t1 - t0) * 1000)
            starts.append(t0)
            ends.append(t1)

    await asyncio.gather(*(client() for _ in range(min(concurrency, n))))
    return Timing(sorted(latencies), min(starts), max(ends))


def run_threads(n: int, concurrency: int, one: Callable[[int], None]) -> Timing:
    """``concurrency`` threads, each calling ``one(i)`` (start + wait) until n are done."""
    lock = threading.Lock()
    counter = itertools.count()
    latencies: list[float] = []
    starts: list[float] = []
    ends: list[float] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(min(concurrency, n))

    def take() -> int:
        with lock:
            return next(counter)

    def client() -> None:
        barrier.wait()
        try:
            while (i := take()) < n:
                t0 = time.perf_counter()
                one(i)
                t1 = time.perf_counter()
                with lock:
                    latencies.append((t1 - t0) * 1000)
                    starts.append(t0)
                    ends.append(t1)
        except BaseException as error:  # reported by the caller's thread
            errors.append(error)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(min(concurrency, n))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return Timing(sorted(latencies), min(starts), max(ends))


# -- PostgreSQL probe -----------------------------------------------------------------------


@dataclass
class Window:
    """Counters read at the start of a timed window, to subtract at its end."""

    cpu: float
    backends: dict[int, float]
    wal_lsn: str
    server_cpu: float


class PgProbe:
    """Reads one database's counters from the admin database (never from the database)."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.database = database
        self._conn = psycopg.connect(libpq(admin_url), autocommit=True)
        # A temporary replication slot (dropped with this session) keeps the WAL from here on,
        # so a checkpoint during the window cannot recycle segments pg_waldump must read.
        # Without one (no privilege, none free) the WAL count may come out NaN.
        with contextlib.suppress(psycopg.Error):
            self._conn.execute(
                "SELECT pg_create_physical_replication_slot(%s, true, true)",
                (f"peers_{os.getpid()}_{id(self):x}",),
            )

    def close(self) -> None:
        self._conn.close()

    def _one(self, sql: str, *params: Any) -> Any:
        self._conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self._conn.execute(sql, params).fetchone()
        assert row is not None
        return row

    def transactions(self) -> tuple[int, int]:
        """(xact_commit, xact_rollback) of the database; call it with no client connected."""
        commits, rollbacks = self._one(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s",
            self.database,
        )
        return int(commits), int(rollbacks)

    def backend_pids(self) -> list[int]:
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (self.database,),
        ).fetchall()
        return [int(row[0]) for row in rows]

    def wait_idle(self, timeout: float = 15.0) -> None:
        """Wait until no backend serves the database: each flushed its statistics on exit."""
        deadline = time.monotonic() + timeout
        while self.backend_pids():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.database}: clients still connected after {timeout}s")
            time.sleep(0.05)
        time.sleep(0.1)  # a backend leaves pg_stat_activity just before its last flush

    def backend_cpu(self) -> dict[int, float]:
        """CPU seconds of each backend serving the database (``/proc``: same machine only)."""
        return {pid: cpu for pid in self.backend_pids() if (cpu := process_cpu(pid)) >= 0}

    def wal_lsn(self) -> str:
        return str(self._one("SELECT pg_current_wal_lsn()::text")[0])

    def rows(self, url: str) -> int:
        """Rows in the business table (a connection to the database itself: call it last)."""
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            row = conn.execute(f"SELECT count(*) FROM {BUSINESS_TABLE}").fetchone()
            assert row is not None
            return int(row[0])

    def open_window(self, server_pid: int | None = None) -> Window:
        return Window(
            cpu=time.process_time(),
            backends=self.backend_cpu(),
            wal_lsn=self.wal_lsn(),
            server_cpu=process_cpu(server_pid) if server_pid else float("nan"),
        )

    def close_window(self, window: Window, server_pid: int | None = None) -> dict[str, float]:
        """CPU of this process, of the backends and of the server, and WAL, since the window."""
        cpu = time.process_time() - window.cpu
        now = self.backend_cpu()
        # A backend that connected during the window counts from zero; one that exited in it
        # is lost (pools keep theirs, so this is rare).
        pg_cpu = sum(value - window.backends.get(pid, 0.0) for pid, value in now.items())
        server = process_cpu(server_pid) - window.server_cpu if server_pid else float("nan")
        commits, wal = self.wal_of_database(window.wal_lsn, self.wal_lsn())
        return {
            "cpu": cpu,
            "pg_cpu": pg_cpu,
            "server_cpu": server,
            "write_commits": commits,
            "wal": wal,
        }

    def wal_of_database(self, start: str, end: str) -> tuple[float, float]:
        """(committed write transactions, WAL bytes) of this database between two LSNs.

        Reads the server's WAL with ``pg_waldump`` (same machine, readable data directory):
        other databases' records on a shared server are told apart by the database OID in
        each block reference. (NaN, NaN) when the WAL cannot be read.
        """
        if start == end:
            return 0.0, 0.0
        try:
            data_dir = self._one("SHOW data_directory")[0]
            oid = self._one("SELECT oid FROM pg_database WHERE datname = %s", self.database)[0]
            version = self._one("SHOW server_version_num")[0]
        except psycopg.Error:
            return float("nan"), float("nan")
        waldump = f"/usr/lib/postgresql/{int(version) // 10000}/bin/pg_waldump"
        try:
            done = subprocess.run(
                [waldump, "-p", f"{data_dir}/pg_wal", "-s", start, "-e", end],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
        except (FileNotFoundError, PermissionError, subprocess.TimeoutExpired):
            return float("nan"), float("nan")
        if done.returncode != 0 and not done.stdout:
            return float("nan"), float("nan")
        return count_wal(done.stdout, int(oid))


WAL_RECORD = re.compile(r"len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*(\d+), .*?desc: (\S+)")
WAL_DATABASE = re.compile(r"rel \d+/(\d+)/")


def count_wal(dump: str, oid: int) -> tuple[float, float]:
    """(COMMITs of transactions that wrote to database ``oid``, their WAL bytes) in a dump."""
    ours: set[int] = set()
    committed: set[int] = set()
    sizes: dict[int, int] = {}
    loose = 0  # records of the database outside any transaction (page images, pruning)
    for line in dump.splitlines():
        record = WAL_RECORD.search(line)
        if record is None:
            continue
        size, xid, desc = int(record[1]), int(record[2]), record[3]
        if desc == "COMMIT":
            committed.add(xid)
        sizes[xid] = sizes.get(xid, 0) + size
        if any(int(db) == oid for db in WAL_DATABASE.findall(line)):
            if xid:
                ours.add(xid)
            else:
                loose += size
    mine = ours & committed
    return float(len(mine)), float(loose + sum(sizes[xid] for xid in mine))


def process_cpu(pid: int) -> float:
    """utime + stime of a process (its threads included), in seconds; -1 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return -1.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- one cell, whatever the system ----------------------------------------------------------


@contextmanager
def measured(cell: Cell) -> Iterator[Meter]:
    """Bracket a cell: its transactions count from before the system starts until it stopped."""
    probe = PgProbe(cell.admin_url, cell.database)
    try:
        yield Meter(cell, probe)
    finally:
        probe.close()


class Meter:
    """One cell's probe: counters before the system starts, the timed window, the result."""

    def __init__(self, cell: Cell, probe: PgProbe) -> None:
        self.cell = cell
        self.probe = probe
        self._rows0 = probe.rows(cell.url)
        probe.wait_idle()
        self._tx0 = probe.transactions()
        self._window: Window | None = None
        self._numbers: dict[str, float] = {}

    def open_window(self, server_pid: int | None = None) -> None:
        """Start of the timed window (after the warm-up)."""
        self._server_pid = server_pid
        self._window = self.probe.open_window(server_pid)

    def close_window(self) -> None:
        """End of the timed window (before the system stops)."""
        assert self._window is not None
        self._numbers = self.probe.close_window(self._window, self._server_pid)

    def result(self, timing: Timing) -> CellResult:
        """The cell's numbers; call it once the system stopped (every connection closed)."""
        cell, numbers, probe = self.cell, self._numbers, self.probe
        probe.wait_idle()
        commits1, rollbacks1 = probe.transactions()
        rows = probe.rows(cell.url) - self._rows0
        n, all_sagas = cell.sagas, cell.sagas + cell.warmup
        lat = timing.latencies_ms
        result = CellResult(
            system=cell.system,
            shape=cell.shape,
            concurrency=cell.concurrency,
            round=cell.round,
            sagas=n,
            warmup=cell.warmup,
            elapsed_s=timing.elapsed_s,
            throughput=n / timing.elapsed_s,
            p50_ms=percentile(lat, 0.50),
            p99_ms=percentile(lat, 0.99),
            mean_ms=sum(lat) / len(lat),
            cpu_ms_per_saga=numbers["cpu"] / n * 1000,
            pg_cpu_ms_per_saga=numbers["pg_cpu"] / n * 1000,
            server_cpu_ms_per_saga=numbers["server_cpu"] / n * 1000,
            commits_per_saga=(commits1 - self._tx0[0]) / all_sagas,
            rollbacks_per_saga=(rollbacks1 - self._tx0[1]) / all_sagas,
            write_commits_per_saga=numbers["write_commits"] / n,
            wal_bytes_per_saga=numbers["wal"] / n,
            business_rows=rows,
            options=cell.options,
        )
        if rows != expected_rows(cell):
            raise RuntimeError(
                f"{cell.system} {cell.shape} c={cell.concurrency}: {rows} business rows, "
                f"expected {expected_rows(cell)}"
            )
        return result


async def timed_async(
    cell: Cell, meter: Meter, one: Callable[[int], Awaitable[None]], server_pid: int | None = None
) -> Timing:
    """Warm up (sagas -1, -2, …), then time ``cell.sagas`` sagas with asyncio clients."""
    if cell.warmup:
        await run_async(cell.warmup, cell.concurrency, lambda i: one(-1 - i))
    meter.open_window(server_pid)
    timing = await run_async(cell.sagas, cell.concurrency, one)
    meter.close_window()
    return timing


def timed_threads(cell: Cell, meter: Meter, one: Callable[[int], None]) -> Timing:
    """Warm up (sagas -1, -2, …), then time ``cell.sagas`` sagas with thread clients."""
    if cell.warmup:
        run_threads(cell.warmup, cell.concurrency, lambda i: one(-1 - i))
    meter.open_window()
    timing = run_threads(cell.sagas, cell.concurrency, one)
    meter.close_window()
    return timing


def expected_rows(cell: Cell) -> int:
    """Business rows a cell must leave: two per saga (warm-up included) for ``write``."""
    return 2 * (cell.sagas + cell.warmup) if cell.shape == "write" else 0
