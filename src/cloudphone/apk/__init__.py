"""APK metadata: package, versions, SDK levels, permissions and label, read from the file itself.

A neutral leaf library: the apps service reads uploads with it and the device agent reads
pushed APKs with it (``pm install``); it imports nothing else from cloudphone, and nothing in
it may import a service. A dependency-free reader of the binary ``AndroidManifest.xml`` and
``resources.arsc`` inside an APK (a zip). It gives the values ``aapt dump badging`` gives,
reads only the two metadata entries (memory does not grow with the APK), and turns every kind
of bad input into an :class:`ApkError` subclass whose message is safe to show.
"""

from cloudphone.apk.archive import MAX_ARSC_SIZE, MAX_MANIFEST_SIZE, parse_apk
from cloudphone.apk.manifest import parse_manifest
from cloudphone.apk.model import (
    ApkError,
    ApkInfo,
    EntryTooLargeError,
    InvalidZipError,
    ManifestInvalidError,
    ManifestMissingError,
    is_valid_package_name,
)

__all__ = [
    "MAX_ARSC_SIZE",
    "MAX_MANIFEST_SIZE",
    "ApkError",
    "ApkInfo",
    "EntryTooLargeError",
    "InvalidZipError",
    "ManifestInvalidError",
    "ManifestMissingError",
    "is_valid_package_name",
    "parse_apk",
    "parse_manifest",
]
