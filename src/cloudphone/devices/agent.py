r"""The device agent: what the local runtime runs as one child process per device.

It stands in for a phone: it listens on the device's ADB port and answers the line protocol
of :mod:`cloudphone.devices.links` (handshake with its serial, properties) or, when the first
bytes are an ADB ``CNXN`` message, real ADB framing with a ``shell:`` service
(:mod:`cloudphone.devices.agent_adb`), so adb-shell can talk to it like to Redroid's adbd. On
its screen-stream port it greets each client with one ``STREAM`` line. SIGTERM or SIGINT
stops it.

Usage::

    python -m cloudphone.devices.agent --host 127.0.0.1 --adb-port 20001 --stream-port 25001 \\
        --serial DEVICE_ID --name CONTAINER_NAME --instance RUNTIME_ID --token TOKEN

``--name``, ``--instance`` and ``--token`` are not used by the agent itself: they sit in its
command line so the local runtime can find its processes in ``/proc`` after a restart.
Exit codes: 0 after a signal, 3 when a port cannot be bound.
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

from cloudphone.devices import agent_adb
from cloudphone.devices.links import DISPLAY_PROP, PROP_KEY

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal a process gets when its parent dies (Linux)."""

SDK_LEVELS = {"11": "30", "12": "32", "13": "33", "14": "34"}
"""Android version → API level reported in the banner."""


class Agent:
    """Answers requests on the ADB port and greets stream clients."""

    def __init__(self, serial: str, android_version: str) -> None:
        self.serial = serial
        self.props: dict[str, str] = {
            "ro.product.model": "cloudphone",
            "ro.build.version.sdk": SDK_LEVELS.get(android_version, "33"),
            "ro.serialno": serial,
            "ro.boot.serialno": serial,
            "sys.boot_completed": "1",
        }

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
        if not PROP_KEY.match(key) or key.startswith("ro.") or any(c.isspace() for c in value):
            return "ERR bad property"
        self.props[key] = value
        return "OK"

    def _getprop(self, key: str) -> str:
        if not PROP_KEY.match(key):
            return "ERR bad property"
        return f"PROP {key} {self.props.get(key, '')}"

    _handlers = {"CNXN?": _cnxn, "PING": _ping, "SETPROP": _setprop, "GETPROP": _getprop}

    def shell(self, command: str) -> str:
        """Output of a shell command over ADB (``getprop``, ``setprop``, ``wm``, ``settings``).

        ``<command>; echo <mark>$?`` (how :class:`~cloudphone.devices.adb.AdbLink` asks for the
        exit status) gets the status echoed after the output, as sh would.
        """
        command, sep, mark = command.partition("; echo ")
        if sep and mark.endswith("$?"):
            output = self._run(command)
            status = 127 if output.startswith("/system/bin/sh:") else 0
            return f"{output}{mark.removesuffix('$?')}{status}\n"
        return self._run(command)

    def _run(self, command: str) -> str:
        words = command.split()
        if words[:1] == ["getprop"] and len(words) == 2:
            return self.props.get(words[1], "") + "\n"
        if words[:1] == ["setprop"] and len(words) == 3:
            return (
                "" if self._setprop(f"{words[1]} {words[2]}") == "OK" else "error: bad property\n"
            )
        if words[:2] == ["wm", "size"] and len(words) == 3:
            self.props["persist.cloudphone.size"] = words[2]
            return self._display()
        if words[:2] == ["wm", "density"] and len(words) == 3:
            self.props["persist.cloudphone.density"] = words[2]
            return self._display()
        if words[:2] == ["settings", "put"] and len(words) == 5:
            self.props[f"settings.{words[2]}.{words[3]}"] = words[4]
            return ""
        return f"/system/bin/sh: {words[0] if words else ''}: inaccessible or not found\n"

    def _display(self) -> str:
        size = self.props.get("persist.cloudphone.size")
        density = self.props.get("persist.cloudphone.density")
        if size and density:
            self.props[DISPLAY_PROP] = f"{size}@{density}"
        return ""

    async def serve_adb(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection on the ADB port: a line request, or real ADB framing."""
        try:
            head = await asyncio.wait_for(reader.readexactly(5), 5)
            if head[:4] == b"CNXN" and head[4:5] != b"?":
                banner = ";".join(f"{k}={v}" for k, v in self.props.items() if k.startswith("ro."))
                await agent_adb.serve_adb(reader, writer, head, banner + ";", self.shell)
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
    """Parse the command line."""
    parser = argparse.ArgumentParser(description="cloudphone device agent")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--adb-port", type=int, required=True)
    parser.add_argument("--stream-port", type=int, required=True)
    parser.add_argument("--serial", required=True)
    parser.add_argument("--android-version", default="13")
    parser.add_argument("--memory-mb", type=int, default=0, help="address-space limit (0: none)")
    parser.add_argument("--name", default="", help="container name (for the runtime's scan)")
    parser.add_argument("--instance", default="", help="runtime id (for the runtime's scan)")
    parser.add_argument("--token", default="", help="container token (for the runtime's scan)")
    parser.add_argument(
        "--parent-pid", type=int, default=0, help="exit when this process (the platform) dies"
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; 3 when a port is taken."""
    if args.parent_pid and not _die_with_parent(args.parent_pid):
        return 0
    if args.memory_mb > 0:
        limit = args.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    agent = Agent(args.serial, args.android_version)
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
        f"agent {args.serial} listening on {args.host}:{args.adb_port} (stream {args.stream_port})",
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
