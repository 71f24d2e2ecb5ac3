"""The APK parser reads what aapt reads, from bytes, paths and files, and degrades gracefully."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudphone.apk import ApkInfo, is_valid_package_name, parse_apk
from tests.support.apk_builder import LABEL_RESOURCE_ID, build_apk, build_apk_bytes

PERMS = ["android.permission.INTERNET", "android.permission.CAMERA"]


def test_reads_every_field_from_path_bytes_and_file(tmp_path: Path) -> None:
    path = tmp_path / "a.apk"
    build_apk(
        path,
        package="com.example.app",
        version_code=42,
        version_name="1.2.3",
        min_sdk=21,
        target_sdk=33,
        permissions=PERMS,
        label="Hello",
        localized_labels={"fr": "Bonjour"},
    )
    info = parse_apk(path)
    assert info == ApkInfo(
        "com.example.app", 42, "1.2.3", 21, 33, tuple(PERMS), "Hello", LABEL_RESOURCE_ID
    )
    assert parse_apk(path.read_bytes()) == info
    with path.open("rb") as file:
        assert parse_apk(file) == info


def test_literal_label_has_no_resource_id() -> None:
    info = parse_apk(build_apk_bytes(package="a.b", label="Lit", label_as_resource=False))
    assert (info.label, info.label_resource_id) == ("Lit", None)


def test_dangling_label_reference_gives_none_not_an_error() -> None:
    info = parse_apk(build_apk_bytes(package="a.b", label="X", with_arsc=False))
    assert (info.label, info.label_resource_id) == (None, LABEL_RESOURCE_ID)


def test_minimal_manifest_applies_android_defaults() -> None:
    info = parse_apk(
        build_apk_bytes(
            package="a.b",
            version_code=None,
            version_name=None,
            min_sdk=None,
            target_sdk=None,
            with_arsc=False,
        )
    )
    assert (info.version_code, info.version_name, info.label) == (None, None, None)
    assert (info.min_sdk_version, info.target_sdk_version) == (None, None)
    assert (info.effective_min_sdk, info.effective_target_sdk) == (1, 1)
    assert info.long_version_code is None


def test_permissions_are_deduplicated_in_order() -> None:
    info = parse_apk(build_apk_bytes(package="a.b", permissions=["p.A", "p.B", "p.A"]))
    assert info.permissions == ("p.A", "p.B")


def test_negative_version_code_is_signed_and_long_code_unsigned() -> None:
    info = parse_apk(build_apk_bytes(package="a.b", version_code=-2))
    assert info.version_code == -2
    assert info.long_version_code == 0xFFFFFFFE


def test_big_apk_parses_without_reading_the_asset(tmp_path: Path) -> None:
    path = tmp_path / "big.apk"
    build_apk(path, package="com.example.big", label="Big", big_asset_size=16 * 2**20)
    assert parse_apk(path).label == "Big"
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("assets/big.bin").compress_type == zipfile.ZIP_STORED
        offset = zf.getinfo("resources.arsc").header_offset
    with path.open("rb") as file:
        head = file.read(offset + 200)
    name_len, extra_len = struct.unpack_from("<HH", head, offset + 26)
    assert (offset + 30 + name_len + extra_len) % 4 == 0  # zipalign-style alignment


def test_package_name_rule() -> None:
    assert is_valid_package_name("com.example.app_2")
    for bad in ("app", "com..x", "1com.x", "com.x/../y", "com.x\x00", ".com.x", "com.x."):
        assert not is_valid_package_name(bad), bad


def test_utf16_long_strings_round_trip() -> None:
    label = "L" * 40_000  # needs the two-unit UTF-16 length prefix
    info = parse_apk(build_apk_bytes(package="a.b", label=label, label_as_resource=False))
    assert info.label == label


pkg_names = st.from_regex(r"[a-z][a-z0-9_]{0,10}(\.[a-z][a-z0-9_]{0,10}){1,3}", fullmatch=True)
texts = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=40
)


@settings(max_examples=60, deadline=None)
@given(
    pkg=pkg_names,
    vc=st.integers(0, 2**31 - 1),
    vn=texts,
    mn=st.integers(1, 40),
    tg=st.integers(1, 40),
    perms=st.lists(pkg_names, max_size=5, unique=True),
    label=texts | st.none(),
    as_res=st.booleans(),
    utf8=st.booleans(),
)
def test_round_trip_property(
    pkg: str,
    vc: int,
    vn: str,
    mn: int,
    tg: int,
    perms: list[str],
    label: str | None,
    as_res: bool,
    utf8: bool,
) -> None:
    data = build_apk_bytes(
        package=pkg,
        version_code=vc,
        version_name=vn,
        min_sdk=mn,
        target_sdk=tg,
        permissions=perms,
        label=label,
        label_as_resource=as_res,
        utf8_manifest=utf8,
    )
    info = parse_apk(io.BytesIO(data))
    assert (info.package, info.version_code, info.version_name) == (pkg, vc, vn)
    assert (info.min_sdk_version, info.target_sdk_version) == (mn, tg)
    assert info.permissions == tuple(perms)
    assert info.label == label
