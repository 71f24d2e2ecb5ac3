"""The apps service: APK uploads streamed into object storage by the ``app_upload`` saga.

Use cases live in :class:`AppsService`; who may see, list and delete what is
:mod:`cloudphone.apps.access` (an upload is private until an admin publishes it; listings take
an :class:`AppScope`). The saga is built by :func:`build_upload_saga` from an
:class:`~cloudphone.apps.storage.base.ObjectStorage` (adapters in :mod:`cloudphone.apps.storage`)
and an :class:`UploadSpool`; :class:`Reconciler` finds drift between records and objects.
"""

from cloudphone.apps.access import AppScope
from cloudphone.apps.config import AppsConfig
from cloudphone.apps.models import LIVE, Application, AppStatus
from cloudphone.apps.reconcile import Reconciler, ReconcileReport
from cloudphone.apps.service import AppsService, UploadAccepted
from cloudphone.apps.spool import UploadSpool
from cloudphone.apps.upload import APP_UPLOAD, STEPS, UploadInput, build_upload_saga

__all__ = [
    "APP_UPLOAD",
    "LIVE",
    "STEPS",
    "AppScope",
    "AppStatus",
    "Application",
    "AppsConfig",
    "AppsService",
    "ReconcileReport",
    "Reconciler",
    "UploadAccepted",
    "UploadInput",
    "UploadSpool",
    "build_upload_saga",
]
