"""APK metadata: package, versions, SDK levels, permissions and label, from the upload itself.

A dependency-free reader of the binary ``AndroidManifest.xml`` and ``resources.arsc`` inside
an APK (a zip). It gives the values ``aapt dump badging`` gives, reads only the two metadata
entries (memory does not grow with the APK), and turns every kind of bad input into an
:class:`ApkError` subclass whose message is safe to show.
"""

from cloudphone.apps.apk.archive import MAX_ARSC_SIZE, MAX_MANIFEST_SIZE, parse_apk
from cloudphone.apps.apk.manifest import parse_manifest
from cloudphone.apps.apk.model import (
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
