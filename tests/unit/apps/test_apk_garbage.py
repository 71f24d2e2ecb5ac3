"""Every kind of bad upload becomes an ApkError subclass with a safe message, never a crash."""

from __future__ import annotations

import contextlib
import io
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudphone.apk import (
    ApkError,
    EntryTooLargeError,
    InvalidZipError,
    ManifestInvalidError,
    ManifestMissingError,
    parse_apk,
    parse_manifest,
)
from tests.support.apk_builder import (
    build_apk_bytes,
    build_manifest,
    corrupt_variants,
    encode_arsc,
    with_manifest,
)

PERMS = ["android.permission.INTERNET", "android.permission.CAMERA"]
GOOD = build_apk_bytes(package="com.example.src", label="Src", permissions=PERMS)
VARIANTS = corrupt_variants(GOOD)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("empty", InvalidZipError),
        ("not_a_zip", InvalidZipError),
        ("truncated_zip", InvalidZipError),
        ("bad_crc", InvalidZipError),
        ("eocd_only", ManifestMissingError),
        ("no_manifest", ManifestMissingError),
        ("manifest_truncated", ManifestInvalidError),
        ("manifest_header_only", ManifestInvalidError),
        ("manifest_garbage", ManifestInvalidError),
        ("manifest_empty", ManifestInvalidError),
        ("manifest_text_xml", ManifestInvalidError),
    ],
)
def test_bad_input_raises_its_error_class(name: str, error: type[ApkError]) -> None:
    with pytest.raises(error) as raised:
        parse_apk(VARIANTS[name])
    assert raised.value.code != ApkError.code  # each class has its own machine name
    assert str(raised.value)


def test_manifest_without_package_is_invalid() -> None:
    manifest = build_manifest(package="a.b").replace(b"p\x00a\x00c\x00k\x00a\x00g\x00e", b"x" * 14)
    with pytest.raises(ManifestInvalidError):
        parse_apk(with_manifest(manifest))


def test_duplicate_manifest_entries_are_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("AndroidManifest.xml", build_manifest(package="a.b"))
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("AndroidManifest.xml", build_manifest(package="evil.pkg"))
    with pytest.raises(InvalidZipError, match="duplicate"):
        parse_apk(buffer.getvalue())


def test_string_offsets_out_of_bounds() -> None:
    manifest = bytearray(build_manifest(package="a.b", permissions=PERMS))
    count = struct.unpack_from("<I", manifest, 16)[0]
    manifest[36 : 36 + 4 * count] = b"\xff\xff\xff\x7f" * count
    with pytest.raises(ManifestInvalidError):
        parse_manifest(bytes(manifest))


def test_entry_size_limits_guard_against_zip_bombs() -> None:
    data = build_apk_bytes(package="a.b", label="L")
    with pytest.raises(EntryTooLargeError):
        parse_apk(data, max_manifest_size=100)
    with pytest.raises(EntryTooLargeError):
        parse_apk(data, max_arsc_size=100)


def test_zip_bomb_manifest_is_refused_by_size() -> None:
    bomb = with_manifest(b"\0" * (20 * 2**20))  # deflates to ~20 KiB
    assert len(bomb) < 100_000
    with pytest.raises(EntryTooLargeError):
        parse_apk(bomb)


def test_missing_path_is_a_server_error_not_an_apk_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        parse_apk(tmp_path / "nope.apk")


GOOD_MANIFEST = build_manifest(package="com.example.fuzz", permissions=PERMS, label="x")
GOOD_ARSC, _ = encode_arsc(
    "com.example.fuzz", {None: {"app_name": "Fuzz"}, "fr": {"app_name": "F"}}
)
EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8)


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    mutated = bytearray(data)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    return bytes(mutated[:cut] if cut is not None else mutated)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=EDITS, cut=st.none() | st.integers(0, len(GOOD_MANIFEST)))
def test_fuzzed_manifest_only_raises_manifest_invalid(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    with contextlib.suppress(ManifestInvalidError):
        parse_manifest(_mutate(GOOD_MANIFEST, edits, cut), GOOD_ARSC)


@settings(max_examples=400, deadline=None)
@given(edits=EDITS, cut=st.none() | st.integers(0, len(GOOD_ARSC)))
def test_fuzzed_resource_table_never_fails_the_parse(
    edits: list[tuple[int, int]], cut: int | None
) -> None:
    info = parse_manifest(GOOD_MANIFEST, _mutate(GOOD_ARSC, edits, cut))
    assert info.package == "com.example.fuzz"


@settings(max_examples=400, deadline=None)
@given(edits=EDITS, cut=st.none() | st.integers(0, len(GOOD)))
def test_fuzzed_zip_only_raises_apk_errors(edits: list[tuple[int, int]], cut: int | None) -> None:
    with contextlib.suppress(ApkError):
        parse_apk(_mutate(GOOD, edits, cut))
