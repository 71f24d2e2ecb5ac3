"""From a spooled upload to the saga input: parse the APK and check what will be stored."""

from __future__ import annotations

import asyncio

from cloudphone.apk import ApkError, ApkInfo, is_valid_package_name, parse_apk
from cloudphone.apps.spool import SpooledUpload
from cloudphone.apps.upload import UploadInput
from cloudphone.domain import InvalidInputError

MAX_DESCRIPTION = 1000
MAX_LABEL = 500
MAX_VERSION_NAME = 255
MAX_PERMISSION = 255
_INT32 = 2**31
_INT63 = 2**63


async def describe_upload(
    spooled: SpooledUpload, *, uploaded_by: str, app_id: str, description: str | None
) -> UploadInput:
    """Parse the spooled APK and build the saga input.

    Raises:
        InvalidInputError: Not an APK (code from the parser: ``invalid_zip``,
            ``manifest_missing``, ``manifest_invalid``, ``apk_entry_too_large``), a package
            name Android would refuse, an impossible version code, or a too long description.
    """
    if description is not None:
        description = description.replace("\x00", "")
        if len(description) > MAX_DESCRIPTION:
            raise InvalidInputError(
                f"description is longer than {MAX_DESCRIPTION} characters", code="invalid_input"
            )
    try:
        info = await asyncio.to_thread(parse_apk, spooled.path)
    except ApkError as error:
        raise InvalidInputError(f"not a valid APK: {error}", code=error.code) from error
    return UploadInput(
        app_id=app_id,
        package_name=_package(info),
        version_code=_version_code(info),
        version_name=_text(info.version_name, MAX_VERSION_NAME),
        label=_text(info.label, MAX_LABEL),
        min_sdk=_sdk(info.min_sdk_version),
        target_sdk=_sdk(info.target_sdk_version),
        permissions=[p for p in (_text(p, MAX_PERMISSION) for p in info.permissions) if p],
        size=spooled.size,
        sha256=spooled.sha256,
        spool_file=spooled.name,
        uploaded_by=uploaded_by,
        description=description or None,
    )


def _package(info: ApkInfo) -> str:
    if not is_valid_package_name(info.package) or len(info.package) > 150:
        raise InvalidInputError(
            f"not a valid APK: package name {info.package[:200]!r} is invalid",
            code="invalid_package_name",
        )
    return info.package


def _version_code(info: ApkInfo) -> int:
    code = info.long_version_code
    if code is None:
        return 0  # Android's default when the manifest has no versionCode
    if not 0 <= code < _INT63:
        raise InvalidInputError(
            f"not a valid APK: version code {code} is out of range", code="manifest_invalid"
        )
    return code


def _sdk(level: int | None) -> int | None:
    return level if level is not None and 0 <= level < _INT32 else None


def _text(value: str | None, limit: int) -> str | None:
    """Without NULs (PostgreSQL text refuses them), cut to ``limit`` characters."""
    if value is None:
        return None
    return value.replace("\x00", "")[:limit] or None
