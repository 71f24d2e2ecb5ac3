"""The local runtime: each device is a real child process (:mod:`cloudphone.devices.agent`).

Its "container table" is a state directory with one JSON record per container (name, token,
pid, ports, labels). The record is published *before* the process is spawned, and the random
token is also on the process's command line, so a platform killed between the spawn and the
pid write still finds the process later (by scanning ``/proc`` for the token). Each device's
files and installed apps live in ``<state_dir>/<name>.data/`` (the agent's ``--data-dir``):
they survive a stop, a restart of the agent or of the platform, and go with ``remove``.
Installs go over real ADB (:meth:`LocalRuntime.adb_session`) whatever ``protocol`` is.

Device processes live as long as the process that started them: they run in their own
session (a Ctrl-C of the platform does not hit them first), but ask the kernel for SIGTERM
when their parent dies (``PR_SET_PDEATHSIG``), even by SIGKILL, and :meth:`LocalRuntime.close`
stops them. Nothing leaks when a platform goes away; the devices sweeper restarts the RUNNING
devices of a restarted platform, and ``list`` also reports stray agents of this runtime that
have no record so the sweeper can kill them. Linux only (``/proc``, ``prctl``).

Of the spec's limits, memory is enforced as the agent's address-space limit (RLIMIT_AS); CPU
and process counts are only accounted in the quota here. The docker runtime enforces all
three with cgroups.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cloudphone.deployment import Deployment, claim_directory
from cloudphone.devices.adb import AdbLink
from cloudphone.devices.installer import AppInstaller, TransferTimeouts
from cloudphone.devices.links import DeviceLink, LineLink, wait_ready
from cloudphone.devices.runtimes.base import (
    Container,
    ContainerNotFoundError,
    DeviceBanner,
    Launch,
)
from cloudphone.devices.spec import DeviceSpec

AGENT_MODULE = "cloudphone.devices.agent"


@dataclass(frozen=True)
class _Record:
    """One container of the local runtime, as stored in ``<state_dir>/<name>.json``."""

    name: str
    token: str
    serial: str
    host: str
    adb_port: int
    stream_port: int
    android_version: str
    memory_mb: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    stopped: bool = False


@dataclass(frozen=True)
class AgentProcess:
    """An agent process of this runtime found in ``/proc``."""

    pid: int
    name: str
    token: str


class LocalRuntime:
    """Runs devices as agent processes on this machine.

    Args:
        state_dir: Where container records and agent logs live; a platform restarted on the
            same directory finds its processes again.
        host: Address the agents listen on.
        instance: Id on every agent's command line (default: derived from ``state_dir``), so
            two platforms on one machine never touch each other's processes.
        python: Interpreter that runs the agents.
        stop_timeout: Seconds between SIGTERM and SIGKILL when stopping.
        protocol: How :meth:`initialize` talks to the agent: its line protocol, or real ADB
            through adb-shell (the Redroid code path, against the agent's adbd).
        init_commands: Shell commands run after boot over ADB (``protocol="adb"``).
        transfer_timeouts: Deadlines of pushes and installs in :meth:`adb_session`.
    """

    kind = "local"

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        instance: str | None = None,
        python: str = sys.executable,
        stop_timeout: float = 5.0,
        protocol: Literal["line", "adb"] = "line",
        init_commands: Sequence[str] = (),
        transfer_timeouts: TransferTimeouts | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        self.instance = instance or f"local-{digest}"
        self.python = python
        self.stop_timeout = stop_timeout
        self._children: set[int] = set()
        self.protocol = protocol
        self.init_commands = tuple(init_commands)
        self.transfer_timeouts = transfer_timeouts or TransferTimeouts()

    # -- the port ----------------------------------------------------------------------

    async def create(self, launch: Launch) -> Container:
        """Spawn the agent, or adopt the container with this name and make sure it runs."""
        record = _Record(
            name=launch.name,
            token=secrets.token_hex(16),
            serial=launch.serial,
            host=self.host,
            adb_port=launch.adb_port,
            stream_port=launch.stream_port,
            android_version=launch.spec.android_version,
            memory_mb=launch.spec.memory_mb,
            labels=dict(launch.labels),
        )
        if not self._publish(record):
            existing = self._read(launch.name)
            if existing is None:
                raise ContainerNotFoundError(f"container {launch.name} vanished while created")
            record = existing
        pid = self._live_pid(record)
        if pid is not None:
            return self._container(record, pid)
        return await self._spawn(record)

    async def inspect(self, name: str) -> Container | None:
        """The container with that name, or None."""
        record = self._read(name)
        return None if record is None else self._container(record, self._live_pid(record))

    async def stop(self, name: str) -> bool:
        """SIGTERM the agent (SIGKILL after ``stop_timeout``); the record stays."""
        record = self._read(name)
        if record is None:
            return False
        pid = self._live_pid(record)
        if pid is not None:
            await self._terminate(pid, signal.SIGTERM)
        self._write(replace(record, pid=None, stopped=True))
        return True

    async def start(self, name: str) -> Container:
        """Start a stopped container again (new process, same record)."""
        record = self._read(name)
        if record is None:
            raise ContainerNotFoundError(f"no container {name}")
        pid = self._live_pid(record)
        if pid is not None:
            return self._container(record, pid)
        return await self._spawn(record)

    async def remove(self, name: str) -> bool:
        """SIGKILL the agent (and any stray with that name) and delete the record."""
        record = self._read(name)
        pids = {p.pid for p in self.scan() if p.name == name}
        if record is not None and (pid := self._live_pid(record)) is not None:
            pids.add(pid)
        for pid in pids:
            await self._terminate(pid, signal.SIGKILL)
        for path in (self._path(name), self._log_path(name)):
            path.unlink(missing_ok=True)
        await asyncio.to_thread(shutil.rmtree, self._data_path(name), ignore_errors=True)
        return record is not None or bool(pids)

    async def list(self) -> builtins.list[Container]:
        """Every container with a record, plus stray agents of this runtime without one.

        One ``/proc`` scan whatever the number of devices: each record's process is the live
        agent carrying its token (the device watch lists every few seconds).
        """
        self._reap()
        agents = {p.token: p for p in self.scan()}
        records = [r for r in map(self._read, self._names()) if r is not None]
        known = {r.token for r in records}
        found = [
            self._container(r, agents[r.token].pid if r.token in agents else None) for r in records
        ]
        strays = [
            Container(p.name, p.token, True, "orphan", {}, self.host, None, None)
            for p in agents.values()
            if p.token not in known
        ]
        return found + strays

    async def initialize(
        self,
        container: Container,
        serial: str,
        spec: DeviceSpec,
        timeout: float,  # noqa: ASYNC109 - the boot deadline is this call's contract
    ) -> DeviceBanner:
        """Wait for the agent's handshake as ``serial``, then apply the screen settings."""
        if container.adb_port is None:
            raise ContainerNotFoundError(f"container {container.name} has no ADB port")
        link: DeviceLink = (
            AdbLink(container.adb_host, container.adb_port, init_commands=self.init_commands)
            if self.protocol == "adb"
            else LineLink(container.adb_host, container.adb_port)
        )

        async def alive() -> bool:
            current = await self.inspect(container.name)
            return current is not None and current.running

        banner = await wait_ready(link, serial, alive, timeout)
        await link.configure(spec)
        return banner

    def adb_session(self, container: Container) -> AbstractAsyncContextManager[AppInstaller]:
        """ADB to the agent (it speaks ADB whatever ``protocol`` says): push, install, list."""
        if container.adb_port is None:
            raise ContainerNotFoundError(f"container {container.name} has no ADB port")
        link = AdbLink(container.adb_host, container.adb_port)
        return link.apps(self.transfer_timeouts)

    async def claim(self, deployment: Deployment) -> None:
        """Stamp the state directory: its records and agents are ``deployment``'s alone."""
        place = "device state directory"
        await asyncio.to_thread(claim_directory, self.state_dir, deployment, place=place)

    async def close(self) -> None:
        """Stop the agents this object started: device processes end with their platform."""
        await asyncio.gather(*(self._terminate(pid, signal.SIGTERM) for pid in self._children))
        self._reap()

    # -- processes ---------------------------------------------------------------------

    def scan(self) -> builtins.list[AgentProcess]:
        """Agent processes of this runtime instance that are alive (from ``/proc``)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            argv = _cmdline(int(entry.name))
            if AGENT_MODULE not in argv or _flag(argv, "--instance") != self.instance:
                continue
            if _alive(int(entry.name)):
                found.append(
                    AgentProcess(int(entry.name), _flag(argv, "--name"), _flag(argv, "--token"))
                )
        return found

    async def _spawn(self, record: _Record) -> Container:
        argv = [
            self.python, "-m", AGENT_MODULE,
            "--host", record.host,
            "--adb-port", str(record.adb_port),
            "--stream-port", str(record.stream_port),
            "--serial", record.serial,
            "--android-version", record.android_version,
            "--data-dir", os.fspath(self._data_path(record.name)),
            "--memory-mb", str(record.memory_mb),
            "--name", record.name,
            "--instance", self.instance,
            "--token", record.token,
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        log = os.fspath(self._log_path(record.name))
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        # Own session: a Ctrl-C of the platform does not hit the devices before it shut down.
        # posix_spawn returns once the child exists; it never waits for the child.
        pid = os.posix_spawn(  # noqa: ASYNC221
            self.python, argv, dict(os.environ), file_actions=actions, setsid=True
        )
        self._children.add(pid)
        running = replace(record, pid=pid, stopped=False)
        self._write(running)
        return self._container(running, pid)

    def _live_pid(self, record: _Record) -> int | None:
        self._reap()
        if record.pid is not None and _alive(record.pid) and record.token in _cmdline(record.pid):
            return record.pid
        if record.stopped:
            return None
        # Spawned by a platform that died before it wrote the pid: find it by its token.
        return next((p.pid for p in self.scan() if p.token == record.token), None)

    async def _terminate(self, pid: int, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + self.stop_timeout
        while _alive(pid):
            self._reap()
            if time.monotonic() >= deadline and signum != signal.SIGKILL:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                signum = signal.SIGKILL
            await asyncio.sleep(0.01)
        self._reap()

    def _reap(self) -> None:
        """Collect agents this object spawned that exited, so they do not linger as zombies.

        Only our own pids: waiting for any child would steal other code's exit statuses.
        """
        for pid in list(self._children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._children.discard(pid)

    # -- records -----------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def _log_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"

    def _data_path(self, name: str) -> Path:
        """The device's files and installed packages (kept across restarts, not removal)."""
        return self.state_dir / f"{name}.data"

    def _names(self) -> builtins.list[str]:
        return sorted(p.stem for p in self.state_dir.glob("*.json"))

    def _read(self, name: str) -> _Record | None:
        try:
            data: dict[str, Any] = json.loads(self._path(name).read_text())
        except FileNotFoundError:
            return None
        return _Record(**data)

    def _publish(self, record: _Record) -> bool:
        """Write a new record; False when one with that name already exists."""
        tmp = self._tmp_path(record.name)
        tmp.write_text(json.dumps(asdict(record)))
        try:
            os.link(tmp, self._path(record.name))  # atomic and exclusive
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        return True

    def _write(self, record: _Record) -> None:
        tmp = self._tmp_path(record.name)
        tmp.write_text(json.dumps(asdict(record)))
        tmp.replace(self._path(record.name))

    def _tmp_path(self, name: str) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)  # on first write, not at construction
        return self.state_dir / f".{name}.{secrets.token_hex(4)}.tmp"

    def _container(self, record: _Record, pid: int | None) -> Container:
        state = "running" if pid is not None else "exited"
        return Container(
            name=record.name,
            id=record.token,
            running=pid is not None,
            state=state,
            labels=record.labels,
            adb_host=record.host,
            adb_port=record.adb_port,
            stream_port=record.stream_port,
        )


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def _flag(argv: list[str], flag: str) -> str:
    with contextlib.suppress(ValueError, IndexError):
        return argv[argv.index(flag) + 1]
    return ""


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat[stat.rindex(")") + 2] not in "ZX"
