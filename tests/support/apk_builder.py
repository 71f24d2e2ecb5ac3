"""Build small, real (unsigned) APK fixtures in pure Python — no aapt needed.

Writes a binary ``AndroidManifest.xml`` (AXML, laid out the way aapt lays it out) and, when the
label is a resource, a minimal ``resources.arsc`` with a ``string`` type (default config plus
optional locales). ``aapt dump badging`` accepts the output (``tests/unit/apps`` checks that
when aapt is installed). It is not signed and has no ``classes.dex``
(``android:hasCode="false"``): a parsing fixture, not an installable app.

    build_apk(path, package="com.example.app", version_code=3, label="My App")
    build_apk(path, package="com.example.big", big_asset_size=200 * 2**20)   # streamed
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

ANDROID_NS = "http://schemas.android.com/apk/res/android"
ATTR_IDS = {
    "label": 0x01010001,
    "name": 0x01010003,
    "hasCode": 0x0101000C,
    "minSdkVersion": 0x0101020C,
    "versionCode": 0x0101021B,
    "versionName": 0x0101021C,
    "targetSdkVersion": 0x01010270,
    "maxSdkVersion": 0x01010271,
}
PKG_ID = 0x7F
STRING_TYPE_ID = 1
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # deterministic output
LABEL_RESOURCE_ID = (PKG_ID << 24) | (STRING_TYPE_ID << 16)
"""Resource id of ``@string/app_name`` in the tables this module writes."""


@dataclass(frozen=True)
class Ref:
    """A resource reference value (``@0x7f010000``)."""

    resid: int


Value = str | int | bool | Ref


@dataclass
class Element:
    """An XML element; attribute keys are ``android:x`` or plain ``x``."""

    tag: str
    attrs: dict[str, Value] = field(default_factory=dict)
    children: list[Element] = field(default_factory=list)


def _len16(n: int) -> bytes:
    if n < 0x8000:
        return struct.pack("<H", n)
    return struct.pack("<HH", 0x8000 | (n >> 16), n & 0xFFFF)


def _len8(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else bytes([0x80 | (n >> 8), n & 0xFF])


def encode_string_pool(strings: list[str], utf8: bool = False) -> bytes:
    data, offsets = bytearray(), []
    for s in strings:
        offsets.append(len(data))
        u16 = s.encode("utf-16-le", "surrogatepass")
        if utf8:
            u8 = s.encode("utf-8")
            data += _len8(len(u16) // 2) + _len8(len(u8)) + u8 + b"\0"
        else:
            data += _len16(len(u16) // 2) + u16 + b"\0\0"
    data += b"\0" * (-len(data) % 4)
    header = 28
    strings_start = header + 4 * len(strings)
    size = strings_start + len(data)
    flags = 0x100 if utf8 else 0
    return (
        struct.pack("<HHIIIIII", 0x0001, header, size, len(strings), 0, flags, strings_start, 0)
        + struct.pack(f"<{len(strings)}I", *offsets)
        + bytes(data)
    )


def _pool_strings(root: Element) -> tuple[list[str], list[str]]:
    """(attribute names with a resource id in id order, the pool's strings)."""
    res_names: set[str] = set()
    other: list[str] = []

    def walk(e: Element) -> None:
        for key, value in e.attrs.items():
            ns, _, local = key.rpartition(":")
            if ns == "android":
                if local not in ATTR_IDS:
                    raise ValueError(f"unknown android attribute {local!r}: add it to ATTR_IDS")
                res_names.add(local)
            else:
                other.append(local)
            if isinstance(value, str):
                other.append(value)
        other.append(e.tag)
        for child in e.children:
            walk(child)

    walk(root)
    # Names that carry a resource id come first, in the order of the resource map.
    res_order = sorted(res_names, key=ATTR_IDS.__getitem__)
    strings: list[str] = list(res_order)
    for s in ["android", ANDROID_NS, *other]:
        if s not in strings:
            strings.append(s)
    return res_order, strings


def _attribute(idx: dict[str, int], local: str, is_android: bool, value: Value) -> bytes:
    raw = 0xFFFFFFFF
    if isinstance(value, bool):
        dtype, data = 0x12, 0xFFFFFFFF if value else 0
    elif isinstance(value, int):
        dtype, data = 0x10, value & 0xFFFFFFFF
    elif isinstance(value, Ref):
        dtype, data = 0x01, value.resid
    else:
        dtype, data = 0x03, idx[value]
        raw = data
    ns = idx[ANDROID_NS] if is_android else 0xFFFFFFFF
    return struct.pack("<IIIHBBI", ns, idx[local], raw, 8, 0, dtype, data)


def encode_axml(root: Element, utf8: bool = False) -> bytes:
    """Encode an element tree with one ``android`` namespace, aapt-style."""
    res_order, strings = _pool_strings(root)
    idx = {s: i for i, s in enumerate(strings)}
    body = bytearray()
    line = [1]

    def node(ctype: int, ext: bytes) -> None:
        body.extend(struct.pack("<HHIII", ctype, 16, 16 + len(ext), line[0], 0xFFFFFFFF) + ext)
        if ctype == 0x0102:
            line[0] += 1

    def element(e: Element) -> None:
        attrs = []
        for key, value in e.attrs.items():
            ns, _, local = key.rpartition(":")
            resid = ATTR_IDS[local] if ns == "android" else 0
            attrs.append((resid == 0, resid, local, ns == "android", value))
        attrs.sort(key=lambda a: (a[0], a[1], a[2]))  # resource-id attributes first, by id
        encoded = b"".join(_attribute(idx, a[2], a[3], a[4]) for a in attrs)
        start = struct.pack("<IIHHHHHH", 0xFFFFFFFF, idx[e.tag], 20, 20, len(attrs), 0, 0, 0)
        node(0x0102, start + encoded)
        for child in e.children:
            element(child)
        node(0x0103, struct.pack("<II", 0xFFFFFFFF, idx[e.tag]))

    namespace = struct.pack("<II", idx["android"], idx[ANDROID_NS])
    node(0x0100, namespace)
    element(root)
    node(0x0101, namespace)
    pool = encode_string_pool(strings, utf8)
    resmap = struct.pack(
        f"<HHI{len(res_order)}I",
        0x0180,
        8,
        8 + 4 * len(res_order),
        *(ATTR_IDS[n] for n in res_order),
    )
    payload = pool + resmap + bytes(body)
    return struct.pack("<HHI", 0x0003, 8, 8 + len(payload)) + payload


def _config(locale: str | None) -> bytes:
    """A 64-byte ResTable_config (like aapt2's); only the locale is ever set."""
    cfg = bytearray(64)
    struct.pack_into("<I", cfg, 0, 64)
    if locale:
        lang, _, region = locale.partition("-")
        cfg[8:10] = lang.encode("ascii")[:2].ljust(2, b"\0")
        if region:
            cfg[10:12] = region.removeprefix("r").encode("ascii")[:2]
    return bytes(cfg)


def _type_chunk(
    keys: list[str], values: list[str], locale: str | None, strings: Mapping[str, str]
) -> bytes:
    cfg = _config(locale)
    header = 20 + len(cfg)
    offsets, entries = [], bytearray()
    for i, key in enumerate(keys):
        if key not in strings:
            offsets.append(0xFFFFFFFF)
            continue
        offsets.append(len(entries))
        entries += struct.pack("<HHI", 8, 0, i)
        entries += struct.pack("<HBBI", 8, 0, 0x03, values.index(strings[key]))
    n = len(keys)
    entries_start = header + 4 * n
    size = entries_start + len(entries)
    head = struct.pack("<HHIBBHII", 0x0201, header, size, STRING_TYPE_ID, 0, 0, n, entries_start)
    return head + cfg + struct.pack(f"<{n}I", *offsets) + bytes(entries)


def encode_arsc(
    package: str, strings_by_config: Mapping[str | None, Mapping[str, str]]
) -> tuple[bytes, dict[str, int]]:
    """A table with one package (0x7f) holding ``string`` resources.

    ``strings_by_config`` maps a locale (None = default, which must define every key) to
    ``{name: text}``. Returns the table and ``{name: resource id}``.
    """
    keys = list(strings_by_config[None])
    values: list[str] = []
    for cfg_strings in strings_by_config.values():
        for text in cfg_strings.values():
            if text not in values:
                values.append(text)
    resids = {k: LABEL_RESOURCE_ID | i for i, k in enumerate(keys)}
    type_pool = encode_string_pool(["string"], utf8=True)
    key_pool = encode_string_pool(keys, utf8=True)
    n = len(keys)
    chunks = bytearray(
        struct.pack("<HHIBBHI", 0x0202, 16, 16 + 4 * n, STRING_TYPE_ID, 0, 0, n) + b"\0" * (4 * n)
    )
    for locale, cfg_strings in strings_by_config.items():
        chunks += _type_chunk(keys, values, locale, cfg_strings)
    name16 = package.encode("utf-16-le")[:254].ljust(256, b"\0")
    header = 288
    size = header + len(type_pool) + len(key_pool) + len(chunks)
    pkg = (
        struct.pack("<HHII", 0x0200, header, size, PKG_ID)
        + name16
        + struct.pack("<IIIII", header, 1, header + len(type_pool), len(keys), 0)
        + type_pool
        + key_pool
        + bytes(chunks)
    )
    global_pool = encode_string_pool(values, utf8=True)
    table = struct.pack("<HHII", 0x0002, 12, 12 + len(global_pool) + len(pkg), 1)
    return table + global_pool + pkg, resids


def build_manifest(
    *,
    package: str,
    version_code: int | None = 1,
    version_name: str | None = "1.0",
    min_sdk: int | None = 21,
    target_sdk: int | None = 34,
    permissions: Iterable[str] = (),
    label: str | Ref | None = None,
    utf8: bool = False,
) -> bytes:
    """A binary AndroidManifest.xml with these values."""
    attrs: dict[str, Value] = {}
    if version_code is not None:
        attrs["android:versionCode"] = version_code
    if version_name is not None:
        attrs["android:versionName"] = version_name
    attrs["package"] = package
    root = Element("manifest", attrs)
    sdk: dict[str, Value] = {}
    if min_sdk is not None:
        sdk["android:minSdkVersion"] = min_sdk
    if target_sdk is not None:
        sdk["android:targetSdkVersion"] = target_sdk
    if sdk:
        root.children.append(Element("uses-sdk", sdk))
    for permission in permissions:
        root.children.append(Element("uses-permission", {"android:name": permission}))
    app: dict[str, Value] = {"android:hasCode": False}
    if label is not None:
        app["android:label"] = label
    root.children.append(Element("application", app))
    return encode_axml(root, utf8=utf8)


def _aligned_stored(zf: zipfile.ZipFile, fp: BinaryIO, name: str, data: bytes) -> None:
    """Store ``data`` uncompressed, payload 4-byte aligned (zipalign's 0xD935 extra field)."""
    info = zipfile.ZipInfo(name, ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    offset = fp.tell() + 30 + len(name.encode()) + 6
    pad = -offset % 4
    info.extra = struct.pack("<HHH", 0xD935, 2 + pad, 4) + b"\0" * pad
    zf.writestr(info, data)


def _write_big_asset(zf: zipfile.ZipFile, size: int) -> None:
    info = zipfile.ZipInfo("assets/big.bin", ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = size  # lets zipfile choose zip64 up front when needed
    chunk = bytes(1 << 20)
    with zf.open(info, "w") as out:
        left = size
        while left:
            n = min(left, len(chunk))
            out.write(chunk if n == len(chunk) else chunk[:n])
            left -= n


def build_apk(
    dest: str | os.PathLike[str] | BinaryIO,
    *,
    package: str,
    version_code: int | None = 1,
    version_name: str | None = "1.0",
    min_sdk: int | None = 21,
    target_sdk: int | None = 34,
    permissions: Iterable[str] = (),
    label: str | None = None,
    label_as_resource: bool = True,
    localized_labels: Mapping[str, str] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    big_asset_size: int = 0,
    utf8_manifest: bool = False,
    with_arsc: bool = True,
) -> None:
    """Write an APK.

    ``label_as_resource`` makes the label ``@string/app_name`` (resolved through
    resources.arsc), else a literal. ``with_arsc=False`` leaves resources.arsc out (a label
    reference then dangles). ``big_asset_size`` adds a STORED ``assets/big.bin`` of that many
    zero bytes, written in 1 MiB steps.
    """
    arsc = None
    manifest_label: str | Ref | None = label
    if with_arsc:  # real APKs always have one; aapt ignores literal labels without it
        configs: dict[str | None, dict[str, str]] = {None: {"app_name": label or package}}
        for locale, text in (localized_labels or {}).items():
            configs[locale] = {"app_name": text}
        arsc, resids = encode_arsc(package, configs)
        if label is not None and label_as_resource:
            manifest_label = Ref(resids["app_name"])
    elif label is not None and label_as_resource:
        manifest_label = Ref(LABEL_RESOURCE_ID)  # dangling reference
    manifest = build_manifest(
        package=package,
        version_code=version_code,
        version_name=version_name,
        min_sdk=min_sdk,
        target_sdk=target_sdk,
        permissions=permissions,
        label=manifest_label,
        utf8=utf8_manifest,
    )
    own = isinstance(dest, str | os.PathLike)
    fp: BinaryIO = open(dest, "wb") if isinstance(dest, str | os.PathLike) else dest  # noqa: SIM115
    try:
        with zipfile.ZipFile(fp, "w") as zf:
            zf.writestr(
                zipfile.ZipInfo("AndroidManifest.xml", ZIP_DATE),
                manifest,
                compress_type=zipfile.ZIP_DEFLATED,
            )
            if arsc is not None:  # Android 11+ wants resources.arsc stored and 4-aligned
                _aligned_stored(zf, fp, "resources.arsc", arsc)
            for name, data in (extra_files or {}).items():
                zf.writestr(
                    zipfile.ZipInfo(name, ZIP_DATE), data, compress_type=zipfile.ZIP_DEFLATED
                )
            if big_asset_size:
                _write_big_asset(zf, big_asset_size)
    finally:
        if own:
            fp.close()


def build_apk_bytes(**options: object) -> bytes:
    """The bytes :func:`build_apk` writes with these options."""
    buffer = io.BytesIO()
    build_apk(buffer, **options)  # type: ignore[arg-type]
    return buffer.getvalue()


def with_manifest(data: bytes, name: str = "AndroidManifest.xml") -> bytes:
    """A zip holding only ``data`` under ``name``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buffer.getvalue()


def corrupt_variants(good: bytes) -> dict[str, bytes]:
    """Hostile inputs derived from a good APK, by name."""
    out: dict[str, bytes] = {
        "empty": b"",
        "not_a_zip": b"this is not an apk\n" * 50,
        "truncated_zip": good[: len(good) // 2],
        "eocd_only": b"PK\x05\x06" + b"\0" * 18,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("classes.dex", b"dex\n035\0")
    out["no_manifest"] = buffer.getvalue()
    with zipfile.ZipFile(io.BytesIO(good)) as zf:
        manifest = zf.read("AndroidManifest.xml")
    out["manifest_truncated"] = with_manifest(manifest[: len(manifest) // 2])
    out["manifest_header_only"] = with_manifest(manifest[:8])
    out["manifest_garbage"] = with_manifest(bytes(range(256)) * 2)
    out["manifest_empty"] = with_manifest(b"")
    out["manifest_text_xml"] = with_manifest(b'<?xml version="1.0"?><manifest package="com.x"/>')
    flipped = bytearray(good)  # a flipped byte inside the deflated manifest: CRC / zlib error
    flipped[flipped.find(b"AndroidManifest.xml") + len("AndroidManifest.xml") + 20] ^= 0xFF
    out["bad_crc"] = bytes(flipped)
    return out
