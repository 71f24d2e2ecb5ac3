"""Object storage for APKs: the port (:mod:`.base`) and its adapters.

``filesystem`` (:class:`~cloudphone.apps.storage.filesystem.FilesystemStorage`, the embedded
default) and ``s3`` (:class:`~cloudphone.apps.storage.s3.S3Storage`, imported on demand: it pulls
in aiobotocore). ``cloudphone.platform`` chooses one from the settings.
"""

from cloudphone.apps.storage.base import (
    Download,
    InvalidObjectKeyError,
    LocalFile,
    ObjectInfo,
    ObjectStorage,
    PendingUpload,
    PresignedUrl,
    StorageError,
    StorageUnavailableError,
    check_key,
)

__all__ = [
    "Download",
    "InvalidObjectKeyError",
    "LocalFile",
    "ObjectInfo",
    "ObjectStorage",
    "PendingUpload",
    "PresignedUrl",
    "StorageError",
    "StorageUnavailableError",
    "check_key",
]
