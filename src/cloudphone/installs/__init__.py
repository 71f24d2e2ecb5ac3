"""Installs: applications put on devices by the ``app_install`` / ``app_uninstall`` sagas.

The devices side owns this: its table (``device_apps``, :mod:`.models`) is about devices, and
its sagas drive devices over ADB (:class:`~cloudphone.devices.installer.AppInstaller`). It
reads APKs through a narrow port, :class:`ApkSource` (:mod:`.ports`), which
``cloudphone.platform`` wires to the apps service: installs import ``cloudphone.devices``,
never ``cloudphone.apps``, and neither service imports installs (``device_delete`` drops a
device's installations through a clean-up hook the platform gives it).

* :class:`InstallService`: ``install_app``, ``list_installations``, ``uninstall_app``.
* :func:`build_install_saga` (:mod:`.install`) and :func:`build_uninstall_saga`
  (:mod:`.uninstall`), from a runtime, the APK source and the worker's :class:`ApkSpool`.
* :class:`SpoolSweeper` (:mod:`.sweep`): in worker processes, removes the spool files of
  ``app_install`` runs that are over (FAILED included) or unknown, at start and periodically.
* Deleting or unpublishing an application leaves its installed copies alone: they are the
  device owner's, and the row keeps naming the application record it came from.
"""

from cloudphone.installs.install import APP_INSTALL, STEPS, InstallInput, build_install_saga
from cloudphone.installs.models import Installation, InstallStatus, metadata
from cloudphone.installs.ports import ApkInfo, ApkSource
from cloudphone.installs.records import drop_device_txn
from cloudphone.installs.service import InstallAccepted, InstallService, UninstallAccepted
from cloudphone.installs.spool import ApkSpool
from cloudphone.installs.sweep import SpoolSweeper
from cloudphone.installs.uninstall import APP_UNINSTALL, UninstallInput, build_uninstall_saga

__all__ = [
    "APP_INSTALL",
    "APP_UNINSTALL",
    "STEPS",
    "ApkInfo",
    "ApkSource",
    "ApkSpool",
    "InstallAccepted",
    "InstallInput",
    "InstallService",
    "InstallStatus",
    "Installation",
    "SpoolSweeper",
    "UninstallAccepted",
    "UninstallInput",
    "build_install_saga",
    "build_uninstall_saga",
    "drop_device_txn",
    "metadata",
]
