r"""The device agent: what the local runtime runs as one child process per device.

It stands in for a phone: it listens on the device's ADB port and answers the line protocol
of :mod:`cloudphone.devices.links` (handshake with its serial, properties), and on its
screen-stream port it greets each client with one ``STREAM`` line. SIGTERM or SIGINT stops it.

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
import resource
import signal
import sys
from collections.abc import Sequence

from cloudphone.devices.links import PROP_KEY

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

    async def serve_adb(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection on the ADB port: one request, one answer."""
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line:
                writer.write(f"{self.answer(line.decode(errors='replace').strip())}\n".encode())
                await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def serve_stream(
        self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One connection on the stream port: a greeting line, then close."""
        display = self.props.get("persist.cloudphone.display", "")
        try:
            writer.write(f"STREAM {self.serial} {display}\n".encode())
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


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
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; 3 when a port is taken."""
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
