"""The fixture encoder and the parser agree with Debian's aapt (skipped without it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from cloudphone.apk import parse_apk
from tests.support.apk_builder import build_apk

FRAMEWORK_RES = Path("/usr/share/android-framework-res/framework-res.apk")
HAS_AAPT = shutil.which("aapt") is not None and FRAMEWORK_RES.exists()
needs_aapt = pytest.mark.skipif(not HAS_AAPT, reason="apt-get install aapt android-framework-res")
PERMS = ["android.permission.INTERNET", "android.permission.CAMERA"]
LABEL = "Héllo 日本 😀"


def badging(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["aapt", "dump", "badging", str(path)], check=True, capture_output=True, text=True
    ).stdout
    pkg = re.search(
        r"^package: name='([^']*)' versionCode='([^']*)' versionName='([^']*)'", out, re.M
    )
    assert pkg

    def one(pattern: str) -> str | None:
        match = re.search(pattern, out, re.M)
        return match.group(1) if match else None

    return {
        "package": pkg.group(1),
        "version_code": pkg.group(2),
        "version_name": pkg.group(3),
        "min": one(r"^sdkVersion:'([^']*)'"),
        "target": one(r"^targetSdkVersion:'([^']*)'"),
        "perms": re.findall(r"^uses-permission: name='([^']*)'", out, re.M),
        "label": one(r"^application-label:'(.*)'$"),
    }


def aapt_package(dest: Path, manifest: str, strings: dict[str, str]) -> None:
    """``aapt package`` a text manifest and ``res/values*/strings.xml`` into ``dest``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "AndroidManifest.xml").write_text(manifest)
        for folder, text in strings.items():
            (root / "res" / folder).mkdir(parents=True)
            (root / "res" / folder / "strings.xml").write_text(
                f'<resources><string name="app_name">{text}</string></resources>'
            )
        subprocess.run(
            ["aapt", "package", "-f", "-M", str(root / "AndroidManifest.xml"),
             "-S", str(root / "res"), "-I", str(FRAMEWORK_RES), "-F", str(dest)],
            check=True,
            capture_output=True,
        )  # fmt: skip


@needs_aapt
@pytest.mark.parametrize("utf8", [False, True])
@pytest.mark.parametrize("as_resource", [False, True])
def test_encoder_output_matches_aapt_badging(tmp_path: Path, utf8: bool, as_resource: bool) -> None:
    path = tmp_path / "x.apk"
    build_apk(
        path,
        package="com.example.x",
        version_code=7,
        version_name="2.0-β",
        min_sdk=23,
        target_sdk=34,
        permissions=PERMS,
        label=LABEL,
        label_as_resource=as_resource,
        utf8_manifest=utf8,
        localized_labels={"fr": "Bonjour"} if as_resource else None,
    )
    assert badging(path) == {
        "package": "com.example.x",
        "version_code": "7",
        "version_name": "2.0-β",
        "min": "23",
        "target": "34",
        "perms": PERMS,
        "label": LABEL,
    }


@needs_aapt
def test_parser_reads_an_aapt_built_apk(tmp_path: Path) -> None:
    path = tmp_path / "a.apk"
    permissions = "\n".join(f'<uses-permission android:name="{p}"/>' for p in PERMS)
    aapt_package(
        path,
        f"""<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android"
    package="com.example.aapt" android:versionCode="9" android:versionName="9.1">
    <uses-sdk android:minSdkVersion="24" android:targetSdkVersion="34"/>
    {permissions}
    <application android:label="@string/app_name"/>
</manifest>""",
        {"values": LABEL, "values-fr": "Bonjour"},
    )
    info = parse_apk(path)
    assert (info.package, info.version_code, info.version_name) == ("com.example.aapt", 9, "9.1")
    assert (info.min_sdk_version, info.target_sdk_version) == (24, 34)
    assert (info.permissions, info.label) == (tuple(PERMS), LABEL)
    assert info.label_resource_id is not None


@pytest.mark.skipif(not FRAMEWORK_RES.exists(), reason="apt-get install android-framework-res")
def test_parser_reads_the_real_framework_res() -> None:
    info = parse_apk(FRAMEWORK_RES)
    assert (info.package, info.version_code, info.label) == ("android", 29, "Android System")
    assert (info.min_sdk_version, info.target_sdk_version, len(info.permissions)) == (29, 29, 14)
