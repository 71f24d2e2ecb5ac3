"""The device agent's shell: the commands ``adb shell`` may run on it.

``getprop KEY``, ``setprop KEY VALUE``, ``wm size WxH``, ``wm density DPI``, ``settings put
NAMESPACE KEY VALUE`` (kept as properties), ``rm [-f] PATH...`` (in the writable
directories), and ``pm ...`` / ``cmd package ...`` (:mod:`.agent_pm`). Words are split as sh
splits them (quotes honoured). Anything else answers ``/system/bin/sh: X: inaccessible or
not found`` with exit status 127, as Android's shell does.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import MutableMapping

from cloudphone.devices.agent_files import DeviceFiles
from cloudphone.devices.agent_pm import Answer, PackageManager
from cloudphone.devices.links import DISPLAY_PROP, PROP_KEY

STATUS_ECHO = re.compile(r"; echo (\S*)\$\?$")
"""``<command>; echo <mark>$?``: how :class:`~cloudphone.devices.adb.AdbLink` asks for the
exit status (ADB's shell protocol v1 has none)."""


class DeviceShell:
    """Runs shell commands against one device's properties, files and packages.

    Args:
        props: The device's properties (changed in place by ``setprop`` and friends).
        files: Its filesystem (None: no ``rm``).
        packages: Its package manager (None: no ``pm``).
    """

    def __init__(
        self,
        props: MutableMapping[str, str],
        files: DeviceFiles | None = None,
        packages: PackageManager | None = None,
    ) -> None:
        self.props = props
        self.files = files
        self.packages = packages

    async def output(self, command: str) -> str:
        """What ``adb shell COMMAND`` prints (the status echoed after it when asked)."""
        asked = STATUS_ECHO.search(command)
        output, status = await self.run(command[: asked.start()] if asked else command)
        return f"{output}{asked.group(1)}{status}\n" if asked else output

    async def run(self, command: str) -> Answer:
        """Output and exit status of one command."""
        try:
            words = shlex.split(command)
        except ValueError as error:
            return f"/system/bin/sh: syntax error: {error}\n", 2
        if words[:2] == ["cmd", "package"]:
            words = ["pm", *words[2:]]
        if words[:1] == ["pm"] and self.packages is not None:
            return await self.packages.run(words[1:])
        if words[:1] == ["rm"] and self.files is not None:
            return self._rm(words[1:])
        answer = self._setting(words)
        if answer is None:
            name = words[0] if words else ""
            return f"/system/bin/sh: {name}: inaccessible or not found\n", 127
        return answer

    def set_prop(self, key: str, value: str) -> bool:
        """Set a writable property; False for a bad key or value (``ro.*`` is read-only)."""
        if not PROP_KEY.match(key) or key.startswith("ro.") or any(c.isspace() for c in value):
            return False
        self.props[key] = value
        return True

    def _setting(self, words: list[str]) -> Answer | None:
        """``getprop``, ``setprop``, ``wm size|density``, ``settings put``; None if not one."""
        if words[:1] == ["getprop"] and len(words) == 2:
            return self.props.get(words[1], "") + "\n", 0
        if words[:1] == ["setprop"] and len(words) == 3:
            if self.set_prop(words[1], words[2]):
                return "", 0
            return f"Failed to set property '{words[1]}' to '{words[2]}'.\n", 1
        if words[:1] == ["wm"] and len(words) == 3 and words[1] in ("size", "density"):
            self.props[f"persist.cloudphone.{words[1]}"] = words[2]
            size = self.props.get("persist.cloudphone.size")
            density = self.props.get("persist.cloudphone.density")
            if size and density:
                self.props[DISPLAY_PROP] = f"{size}@{density}"
            return "", 0
        if words[:2] == ["settings", "put"] and len(words) == 5:
            self.props[f"settings.{words[2]}.{words[3]}"] = words[4]
            return "", 0
        return None

    def _rm(self, args: list[str]) -> Answer:
        """``rm [-f] PATH...``: toybox's messages; ``-f`` is quiet about missing files."""
        assert self.files is not None
        force = "-f" in args
        errors = []
        for path in (a for a in args if not a.startswith("-")):
            try:
                self.files.remove(path)
            except FileNotFoundError:
                if not force:
                    errors.append(f"rm: {path}: No such file or directory\n")
            except OSError as error:
                errors.append(f"rm: {path}: {error.strerror}\n")
        return "".join(errors), 1 if errors else 0
