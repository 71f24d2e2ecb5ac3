r"""The device agent: what the local runtime runs as one child process per device.

It stands in for a phone. On the device's ADB port it answers either the line protocol of
:mod:`cloudphone.devices.links` (handshake with its serial, properties) or, when the first
bytes are an ADB ``CNXN`` message, real ADB, so adb-shell drives it as it drives Redroid's
adbd. The ADB subset it speaks:

- transport (:mod:`.agent_adb`): ``CNXN`` (version 0x01000000, 1 MiB payloads), ``AUTH``
  when started with ``--adb-keys`` (:mod:`.agent_auth`), any number of concurrent streams
  (``OPEN``/``OKAY``/``WRTE``/``CLSE``, acknowledged one write at a time);
- ``sync:`` (:mod:`.agent_sync`): ``SEND`` (streamed to disk; ``DATA`` ≤ 64 KiB), ``STAT``,
  ``RECV``, ``LIST``, ``QUIT``;
- ``shell:`` / ``exec:`` commands (:mod:`.agent_shell`): ``getprop``, ``setprop``, ``wm
  size``, ``wm density``, ``settings put``, ``rm [-f]``, and ``pm`` (or ``cmd package``)
  ``install``, ``uninstall``, ``list packages``, ``path`` (:mod:`.agent_pm`); anything else
  answers ``/system/bin/sh: X: inaccessible or not found`` (exit 127).

Files and installed packages live in ``--data-dir`` (``fs/`` and ``packages.json``), so a
restarted agent keeps them; without it there is no ``sync:`` and no ``pm``. Writable device
paths are ``/data/local/tmp`` and the shared storage, as for the shell user. On its
screen-stream port it greets each client with one ``STREAM`` line. SIGTERM or SIGINT stops it.

Usage::

    python -m cloudphone.devices.agent --host 127.0.0.1 --adb-port 20001 --stream-port 25001 \
        --serial DEVICE_ID --data-dir DIR --name CONTAINER_NAME --instance RUNTIME_ID --token T

In a container the ports, serial, Android version, data directory and keys may come from
``AGENT_PORT``, ``STREAM_PORT``, ``DEVICE_SERIAL``, ``DEVICE_ANDROID_VERSION``,
``DEVICE_DATA_DIR`` and ``DEVICE_ADB_KEYS`` instead (what the docker runtime and the agent
image set), and Redroid's ``androidboot.KEY=VALUE`` arguments are accepted (``serialno`` is
the serial; each becomes ``ro.boot.KEY``). ``--name``, ``--instance`` and ``--token`` are not
used by the agent itself: they sit in its command line so the local runtime can find its
processes in ``/proc`` after a restart. Exit codes: 0 after a signal, 3 when a port cannot be
bound.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import resource
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from cloudphone.devices import agent_adb
from cloudphone.devices.agent_auth import AdbKeys
from cloudphone.devices.agent_files import DeviceFiles
from cloudphone.devices.agent_pm import PackageManager
from cloudphone.devices.agent_shell import DeviceShell
from cloudphone.devices.agent_sync import sync_service
from cloudphone.devices.links import DISPLAY_PROP, PROP_KEY

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal a process gets when its parent dies (Linux)."""

SDK_LEVELS = {"11": "30", "12": "32", "13": "33", "14": "34"}
"""Android version → API level reported in the banner."""


class Agent:
    """Answers requests on the ADB port and greets stream clients."""

    def __init__(
        self,
        serial: str,
        android_version: str,
        data_dir: Path | None = None,
        adb_keys: AdbKeys | None = None,
    ) -> None:
        self.serial = serial
        sdk = SDK_LEVELS.get(android_version, "33")
        self.props: dict[str, str] = {
            "ro.product.model": "cloudphone",
            "ro.build.version.sdk": sdk,
            "ro.serialno": serial,
            "ro.boot.serialno": serial,
            "sys.boot_completed": "1",
        }
        self.adb_keys = adb_keys
        self.files = None if data_dir is None else DeviceFiles(data_dir / "fs")
        packages = None
        if self.files is not None and data_dir is not None:
            packages = PackageManager(self.files, data_dir / "packages.json", int(sdk))
        self.shell = DeviceShell(self.props, self.files, packages)

    def answer(self, line: str) -> str:
        """The answer line to one request line."""
        word, _, rest = line.partition(" ")
        handler = self._handlers.get(word)
        return handler(self, rest) if handler else "ERR unknown"

    def _cnxn(self, nonce: str) -> str:
        banner = ";".join(f"{k}={v}" for k, v in self.props.items() if k.startswith("ro."))
        return f"CNXN {self.serial} {nonce or '-'} device::{banner};"

    def _ping(self, _rest: str) -> str:
        return "PONG"

    def _setprop(self, rest: str) -> str:
        key, _, value = rest.partition(" ")
        return "OK" if self.shell.set_prop(key, value) else "ERR bad property"

    def _getprop(self, key: str) -> str:
        if not PROP_KEY.match(key):
            return "ERR bad property"
        return f"PROP {key} {self.props.get(key, '')}"

    _handlers = {"CNXN?": _cnxn, "PING": _ping, "SETPROP": _setprop, "GETPROP": _getprop}

    def _route(self, destination: str) -> agent_adb.Service | None:
        """The service of an ADB ``OPEN``: ``shell:``/``exec:`` commands and ``sync:``."""
        kind, _, command = destination.partition(":")
        if kind in ("shell", "exec") and command.strip():

            async def run(stream: agent_adb.AdbStream) -> None:
                await stream.write((await self.shell.output(command)).encode())

            return run
        if destination == "sync:" and self.files is not None:
            return sync_service(self.files)
        return None

    async def serve_adb(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection on the ADB port: a line request, or real ADB framing."""
        try:
            head = await asyncio.wait_for(reader.readexactly(5), 5)
            if head[:4] == b"CNXN" and head[4:5] != b"?":
                banner = ";".join(f"{k}={v}" for k, v in self.props.items() if k.startswith("ro."))
                keys = None if self.adb_keys is None else self.adb_keys.fresh()
                connection = agent_adb.AdbConnection(
                    reader, writer, banner + ";", self._route, keys
                )
                await connection.serve(head)
                return
            line = head + await asyncio.wait_for(reader.readline(), 5)
            writer.write(f"{self.answer(line.decode(errors='replace').strip())}\n".encode())
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def serve_stream(
        self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One connection on the stream port: a greeting line, then close."""
        display = self.props.get(DISPLAY_PROP, "")
        try:
            writer.write(f"STREAM {self.serial} {display}\n".encode())
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


def _die_with_parent(parent_pid: int) -> bool:
    """Ask for SIGTERM when the parent dies; False if it is already gone (nothing to serve)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died before prctl: then we were re-parented already.
    return os.getppid() == parent_pid


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; unset options fall back to the container's environment."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description="cloudphone device agent")
    parser.add_argument("--host", default="127.0.0.1")
    for flag, variable in (("--adb-port", "AGENT_PORT"), ("--stream-port", "STREAM_PORT")):
        parser.add_argument(flag, type=int, default=env(variable), required=not env(variable))
    serial = env("DEVICE_SERIAL")
    parser.add_argument("--serial", default=serial, required=not serial)
    parser.add_argument("--android-version", default=env("DEVICE_ANDROID_VERSION", "13"))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=env("DEVICE_DATA_DIR"),
        help="the device's files and installed packages (none: no sync service, no pm)",
    )
    parser.add_argument(
        "--adb-keys",
        type=Path,
        default=env("DEVICE_ADB_KEYS"),
        help="public keys allowed to connect over ADB (adbd's adb_keys); none: no auth",
    )
    parser.add_argument("--memory-mb", type=int, default=0, help="address-space limit (0: none)")
    parser.add_argument("--name", default="", help="container name (for the runtime's scan)")
    parser.add_argument("--instance", default="", help="runtime id (for the runtime's scan)")
    parser.add_argument("--token", default="", help="container token (for the runtime's scan)")
    parser.add_argument(
        "--parent-pid", type=int, default=0, help="exit when this process (the platform) dies"
    )
    parser.add_argument("boot", nargs="*", help="Redroid's androidboot.KEY=VALUE arguments")
    return parser.parse_args(argv)


def build_agent(args: argparse.Namespace) -> Agent:
    """The agent the arguments describe (boot arguments become ``ro.boot.*`` properties)."""
    boot = {}
    for word in args.boot:
        key, _, value = word.removeprefix("androidboot.").partition("=")
        if word.startswith("androidboot.") and key:
            boot[key] = value
    keys = None if args.adb_keys is None else AdbKeys.load(args.adb_keys)
    agent = Agent(boot.get("serialno") or args.serial, args.android_version, args.data_dir, keys)
    agent.props.update({f"ro.boot.{key}": value for key, value in boot.items()})
    return agent


async def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; 3 when a port is taken."""
    if args.parent_pid and not _die_with_parent(args.parent_pid):
        return 0
    if args.memory_mb > 0:
        limit = args.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    agent = build_agent(args)
    try:
        adb = await asyncio.start_server(agent.serve_adb, args.host, args.adb_port)
        stream = await asyncio.start_server(agent.serve_stream, args.host, args.stream_port)
    except OSError as error:
        print(f"agent {args.serial}: cannot listen: {error}", file=sys.stderr, flush=True)
        return 3
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(
        f"agent {agent.serial} listening on {args.host}:{args.adb_port} "
        f"(stream {args.stream_port})",
        file=sys.stderr,
        flush=True,
    )
    async with adb, stream:
        await stop.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
