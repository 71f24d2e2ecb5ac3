"""What an APK parse yields (:class:`ApkInfo`) and the errors a bad upload raises.

Every :class:`ApkError` is a problem with the uploaded bytes: its message is safe to show to the
client and its ``code`` is a stable machine name. Anything else escaping the parser is a bug
or a server-side I/O error (a missing path, say).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PACKAGE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+")


class ApkError(Exception):
    """The upload is not a usable APK; ``str(error)`` is safe to return to clients."""

    code = "invalid_apk"


class InvalidZipError(ApkError):
    """Not a zip, or a corrupt or unsupported one.

    Bad CRC or deflate data, encryption, an unknown compression method, or duplicate
    ``AndroidManifest.xml`` entries.
    """

    code = "invalid_zip"


class ManifestMissingError(ApkError):
    """The zip has no ``AndroidManifest.xml`` (also what an AAB, .apks or .xapk gives)."""

    code = "manifest_missing"


class ManifestInvalidError(ApkError):
    """``AndroidManifest.xml`` is not valid binary XML or lacks the package name."""

    code = "manifest_invalid"


class EntryTooLargeError(ApkError):
    """A metadata entry is larger than the parser's limit (zip-bomb guard)."""

    code = "apk_entry_too_large"


@dataclass(frozen=True, slots=True)
class ApkInfo:
    """The metadata Android reads from an APK's manifest (and ``resources.arsc``).

    Attributes:
        package: Application package name (always present).
        version_code: ``android:versionCode`` (signed 32-bit), None when absent.
        version_name: Literal or resolved ``android:versionName``.
        min_sdk_version: ``<uses-sdk android:minSdkVersion>``; None when absent (Android
            assumes 1) or a preview codename.
        target_sdk_version: ``android:targetSdkVersion``; None when absent (Android uses min).
        permissions: Declared permissions, de-duplicated, in manifest order.
        label: The application label, literal or resolved; None if absent or unresolvable.
        label_resource_id: Set when the manifest's label was a resource reference.
        version_code_major: ``android:versionCodeMajor`` (the high 32 bits), if any.
    """

    package: str
    version_code: int | None
    version_name: str | None
    min_sdk_version: int | None
    target_sdk_version: int | None
    permissions: tuple[str, ...]
    label: str | None
    label_resource_id: int | None
    version_code_major: int | None = None

    @property
    def long_version_code(self) -> int | None:
        """Android's 64-bit version code: ``versionCodeMajor << 32 | versionCode``."""
        if self.version_code is None:
            return None
        return ((self.version_code_major or 0) << 32) | (self.version_code & 0xFFFFFFFF)

    @property
    def effective_min_sdk(self) -> int:
        """The minimum SDK Android applies (1 when the manifest says nothing)."""
        return self.min_sdk_version if self.min_sdk_version is not None else 1

    @property
    def effective_target_sdk(self) -> int:
        """The target SDK Android applies (the minimum when the manifest says nothing)."""
        if self.target_sdk_version is not None:
            return self.target_sdk_version
        return self.effective_min_sdk


def is_valid_package_name(name: str) -> bool:
    """Android's rule for application package names: two or more ``[A-Za-z][A-Za-z0-9_]*``."""
    return _PACKAGE_NAME.fullmatch(name) is not None
