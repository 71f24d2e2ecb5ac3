"""A private PostgreSQL cluster for tests that stop, restart or kill the database.

The shared server on 127.0.0.1:5432 is never restarted (other tests use it). This one is a
fresh ``initdb`` in a temporary directory, served by a ``postgres`` child of the test process
on a free 127.0.0.1 port, with trust authentication and durability off (a test cluster has
nothing to lose). Its socket lives in its own directory, so it never collides with a system
cluster.

PostgreSQL refuses to run as root, so as root every PostgreSQL program runs as the ``postgres``
system user (created by the Debian/Ubuntu ``postgresql`` package, as ``.ci/run`` sets it up),
and the directory is created where that user can reach it and handed to it.

The postmaster is its own process-group leader: :meth:`PostgresServer.stop` signals it by pid
(smart, fast or immediate shutdown, or SIGKILL of the group, like a crash) and reaps it.
:meth:`PostgresServer.restart` is what ``pg_ctl restart -m fast`` does: clients get
``AdminShutdownError`` and then refused connections until it is back, on the same port and
data. A directory left behind by a test process that died is cleaned up by the next one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.support.server import free_port

PREFIX = "cloudphone-pg-"
"""Name prefix of the clusters' directories (in the system temporary directory)."""
OWNER_FILE = "owner.pid"
"""Pid of the test process that owns a cluster directory (stale when that process is gone)."""
SERVICE_USER = "postgres"
"""System user that runs PostgreSQL when the tests run as root."""

SHUTDOWN_SIGNALS = {
    "smart": signal.SIGTERM,  # waits for clients to disconnect
    "fast": signal.SIGINT,  # terminates sessions (57P01 admin shutdown), checkpoints, exits
    "immediate": signal.SIGQUIT,  # no checkpoint: crash recovery at the next start
}

SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "32MB",
    "logging_collector": "off",
    "log_min_messages": "warning",
}
"""Server settings: loopback only, no durability, room for several pooled processes."""


def postgres_bin_dir() -> Path:
    """The newest installed ``/usr/lib/postgresql/<version>/bin`` (or PATH's ``initdb``)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return Path(found).parent


@dataclass
class PostgresServer:
    """One private PostgreSQL cluster: :meth:`start`, :meth:`stop`, :meth:`restart`, :meth:`remove`.

    Args:
        port: TCP port on 127.0.0.1 (a free one by default).
        settings: Extra or overriding server settings (``name=value``).

    Prefer :func:`private_postgres`, which removes the cluster at the end.
    """

    port: int = field(default_factory=free_port)
    settings: dict[str, str] = field(default_factory=dict)
    bin_dir: Path = field(default_factory=postgres_bin_dir)
    directory: Path | None = None
    popen: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def init(self) -> None:
        """Create the cluster directory and run ``initdb`` (trust auth, superuser postgres)."""
        assert self.directory is None, "already initialised"
        sweep_stale_clusters()
        self.directory = Path(tempfile.mkdtemp(prefix=PREFIX))
        (self.directory / OWNER_FILE).write_text(str(os.getpid()))
        self._hand_over(self.directory)
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ]
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start the postmaster (initialising first if needed) and wait until it accepts."""
        if self.directory is None:
            self.init()
        assert not self.alive, "already running"
        options = [f"--{name}={value}" for name, value in {**SETTINGS, **self.settings}.items()]
        command = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
            *options,
        ]
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                command,
                cwd=self.directory,
                env=_service_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a Ctrl-C of pytest does not reach it
                **_as_service_user(),
            )
        self._wait_accepting(timeout)

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop by pid: ``smart``, ``fast`` or ``immediate`` shutdown, or ``kill`` (a crash)."""
        popen, self.popen = self.popen, None
        if popen is None or popen.poll() is not None:
            return
        if mode == "kill":
            # The whole group: orphaned backends would keep the shared memory attached and
            # make the next start refuse.
            os.killpg(popen.pid, signal.SIGKILL)
        else:
            os.kill(popen.pid, SHUTDOWN_SIGNALS[mode])
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)
        if mode == "kill":
            self._wait_group_gone(popen.pid)

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> None:
        """Stop (``mode``), stay down ``down_for`` seconds, start again on the same port."""
        self.stop(mode)
        if down_for > 0:
            # Simulated outage length: nothing to wait for, the database is down on purpose.
            time.sleep(down_for)
        self.start()

    def remove(self) -> None:
        """Stop at once (immediate shutdown) and delete the cluster's directory."""
        self.stop("immediate")
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while the postmaster runs."""
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self.popen.pid if self.alive and self.popen is not None else None

    def url(self, database: str = "postgres", driver: str = "asyncpg") -> str:
        """A SQLAlchemy URL (``postgresql+<driver>://…``) of a database on this cluster."""
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def libpq_url(self, database: str = "postgres") -> str:
        """A libpq URL (psycopg, asyncpg, psql) of a database on this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database; returns its asyncpg SQLAlchemy URL."""
        with psycopg.connect(self.libpq_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self, tail: int = 4000) -> str:
        """The end of the server's log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except (FileNotFoundError, RuntimeError):
            return ""

    @property
    def data_dir(self) -> Path:
        """PGDATA."""
        return self._dir / "data"

    @property
    def socket_dir(self) -> Path:
        """Where the server's unix socket lives (its own, never /var/run/postgresql)."""
        return self._dir

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr."""
        return self._dir / "postgres.log"

    @property
    def _dir(self) -> Path:
        if self.directory is None:
            raise RuntimeError("the cluster is not initialised")
        return self.directory

    # -- internals ------------------------------------------------------------------------

    def _run(self, command: Sequence[str]) -> None:
        result = subprocess.run(
            command,
            cwd=self.directory,
            env=_service_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            **_as_service_user(),
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise RuntimeError(f"{command[0]} failed ({result.returncode}):\n{output}")

    def _hand_over(self, directory: Path) -> None:
        """Give the directory to the service user (as root) and check that it can write there."""
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam(SERVICE_USER)
        os.chown(directory, user.pw_uid, user.pw_gid)
        probe = subprocess.run(
            ["test", "-w", str(directory)], check=False, env=_service_env(), **_as_service_user()
        )
        if probe.returncode != 0:
            raise RuntimeError(
                f"user {SERVICE_USER} cannot write {directory}: put TMPDIR somewhere it can reach"
            )

    def _wait_accepting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise RuntimeError(f"postgres exited during start:\n{self.log()}")
            try:
                with psycopg.connect(self.libpq_url(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() >= deadline:
                    self.stop("immediate")
                    raise RuntimeError(
                        f"postgres not accepting connections within {timeout}s:\n{self.log()}"
                    ) from None
                time.sleep(0.02)  # polling a starting server: it has no event to wait on

    @staticmethod
    def _wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
        """Wait until every process of the killed group is gone (backends exit on their own)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)


@contextlib.contextmanager
def private_postgres(settings: dict[str, str] | None = None) -> Iterator[PostgresServer]:
    """A started private cluster, removed (stopped by pid, directory deleted) at the end."""
    server = PostgresServer(settings=dict(settings or {}))
    try:
        server.start()
        yield server
    finally:
        server.remove()


def sweep_stale_clusters() -> None:
    """Stop and delete clusters whose owning test process no longer exists."""
    for directory in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        owner = _read_pid(directory / OWNER_FILE)
        if owner is None or _process_exists(owner):
            continue
        postmaster = _read_pid(directory / "data" / "postmaster.pid")
        if postmaster is not None and _is_postmaster_of(postmaster, directory):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(postmaster, signal.SIGKILL)
            PostgresServer._wait_group_gone(postmaster)
        shutil.rmtree(directory, ignore_errors=True)


def _read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except (FileNotFoundError, PermissionError):
        return None
    return int(first) if first.isdigit() else None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_postmaster_of(pid: int, directory: Path) -> bool:
    """Whether ``pid`` is a postgres serving ``directory`` (never signal a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, PermissionError):
        return False
    return (
        bool(cmdline)
        and cmdline[0].endswith(b"postgres")
        and str(directory).encode() in b" ".join(cmdline)
    )


def _as_service_user() -> dict[str, object]:
    """Popen options that drop root to the service user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    return {"user": SERVICE_USER, "group": SERVICE_USER, "extra_groups": []}


def _service_env() -> dict[str, str]:
    """A minimal environment: PostgreSQL reads PG* variables, and root's HOME is unreachable."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
    }
