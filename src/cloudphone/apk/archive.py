"""The APK as a zip: find the two metadata entries, read them with size caps, parse.

Only the central directory and ``AndroidManifest.xml`` + ``resources.arsc`` are read, so the
memory a parse needs is bounded by the entry limits, not by the APK's size.
"""

from __future__ import annotations

import io
import logging
import lzma
import os
import struct
import zipfile
import zlib
from typing import BinaryIO

from cloudphone.apk.manifest import parse_manifest
from cloudphone.apk.model import (
    ApkError,
    ApkInfo,
    EntryTooLargeError,
    InvalidZipError,
    ManifestMissingError,
)

log = logging.getLogger("cloudphone.apk")

MANIFEST = "AndroidManifest.xml"
ARSC = "resources.arsc"
MAX_MANIFEST_SIZE = 16 * 1024 * 1024
"""Largest manifest read (real ones are kilobytes; framework-res's is 217 KiB)."""
MAX_ARSC_SIZE = 128 * 1024 * 1024
"""Largest resource table read (framework-res.apk's is 30 MiB)."""

# What zipfile and the decompressors may raise on hostile input (OSError: a seek to a bogus
# offset, say).
_ZIP_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    struct.error,
    UnicodeDecodeError,
    OverflowError,
    KeyError,
    IndexError,
)

Source = str | os.PathLike[str] | bytes | BinaryIO
"""A path, the APK's bytes, or a seekable binary file."""


def parse_apk(
    source: Source,
    *,
    max_manifest_size: int = MAX_MANIFEST_SIZE,
    max_arsc_size: int = MAX_ARSC_SIZE,
) -> ApkInfo:
    """Read an APK's metadata.

    Args:
        source: A path, the bytes, or a seekable binary file.
        max_manifest_size: Largest ``AndroidManifest.xml`` accepted.
        max_arsc_size: Largest ``resources.arsc`` read.

    Raises:
        ApkError: The input is not a usable APK (see its subclasses).
        OSError: ``source`` is a path that cannot be opened (not the client's fault).
    """
    if isinstance(source, bytes):
        return _parse_zip(io.BytesIO(source), max_manifest_size, max_arsc_size)
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as file:
            return _parse_zip(file, max_manifest_size, max_arsc_size)
    return _parse_zip(source, max_manifest_size, max_arsc_size)


def _parse_zip(file: BinaryIO, max_manifest_size: int, max_arsc_size: int) -> ApkInfo:
    try:
        with zipfile.ZipFile(file) as archive:
            manifest = _read_manifest(archive, max_manifest_size)
            arsc = _read_arsc(archive, max_arsc_size)
    except ApkError:
        raise
    except _ZIP_ERRORS as error:
        raise InvalidZipError(f"not a valid zip/APK: {error}") from error
    return parse_manifest(manifest, arsc)


def _read_manifest(archive: zipfile.ZipFile, limit: int) -> bytes:
    entries = [i for i in archive.infolist() if i.filename == MANIFEST]
    if not entries:
        raise ManifestMissingError("APK has no AndroidManifest.xml")
    if len(entries) > 1:  # Android refuses these; zipfile would read the last one
        raise InvalidZipError("APK has duplicate AndroidManifest.xml entries")
    return _read_entry(archive, entries[0], limit)


def _read_arsc(archive: zipfile.ZipFile, limit: int) -> bytes | None:
    entries = [i for i in archive.infolist() if i.filename == ARSC]
    if len(entries) != 1:
        return None
    try:
        return _read_entry(archive, entries[0], limit)
    except EntryTooLargeError:
        raise
    except _ZIP_ERRORS as error:  # labels become None; the manifest is what Android needs
        log.warning("cannot read resources.arsc: %s", error)
        return None


def _read_entry(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, limit: int) -> bytes:
    if entry.file_size > limit:
        raise EntryTooLargeError(f"{entry.filename} is {entry.file_size} bytes (limit {limit})")
    with archive.open(entry) as stream:
        data = stream.read(limit + 1)  # the header's size may lie
    if len(data) > limit:
        raise EntryTooLargeError(f"{entry.filename} exceeds {limit} bytes")
    return data
