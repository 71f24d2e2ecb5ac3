"""The binary ``AndroidManifest.xml`` (AXML), read the way Android's package parser reads it.

Attributes are found by resource id (names are only a fallback for hand-made files), only
``<manifest>`` and its direct children count, and ``@string``/``@integer`` references are
resolved through ``resources.arsc`` when one is given. A broken ``resources.arsc`` never fails
the parse: the affected fields become None, as Android itself needs only the manifest.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from cloudphone.apk.arsc import ResourceTable
from cloudphone.apk.chunks import (
    NO_INDEX,
    REFERENCES,
    T_STRING_POOL,
    T_XML,
    T_XML_END_ELEMENT,
    T_XML_RESOURCE_MAP,
    T_XML_START_ELEMENT,
    V_INT_BOOLEAN,
    V_INT_DEC,
    V_INT_HEX,
    V_STRING,
    Malformed,
    StringPool,
    children,
    chunk_header,
)
from cloudphone.apk.model import ApkInfo, ManifestInvalidError

log = logging.getLogger("cloudphone.apk")

# android.R.attr ids (stable since the API level that introduced each)
A_LABEL = 0x01010001
A_NAME = 0x01010003
A_MIN_SDK = 0x0101020C
A_VERSION_CODE = 0x0101021B
A_VERSION_NAME = 0x0101021C
A_TARGET_SDK = 0x01010270
A_VERSION_CODE_MAJOR = 0x01010576

_ATTRIBUTE_NAMES = {
    A_LABEL: "label",
    A_NAME: "name",
    A_VERSION_CODE: "versionCode",
    A_VERSION_NAME: "versionName",
    A_MIN_SDK: "minSdkVersion",
    A_TARGET_SDK: "targetSdkVersion",
    A_VERSION_CODE_MAJOR: "versionCodeMajor",
}
PERMISSION_TAGS = frozenset({"uses-permission", "uses-permission-sdk-23", "uses-permission-sdk-m"})
_READ_CHILDREN = PERMISSION_TAGS | {"uses-sdk", "application"}
_RESOURCE_ERRORS = (Malformed, struct.error, IndexError, ValueError, RecursionError)
_MANIFEST_ERRORS = (Malformed, struct.error, IndexError, ValueError)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Value:
    """A typed attribute value (``Res_value``) and its string, when it has one."""

    data_type: int
    data: int
    string: str | None


@dataclass(slots=True)
class _Fields:
    """What the manifest says, before references are resolved."""

    package: str | None = None
    attributes: dict[str, _Value | None] = field(default_factory=dict)
    permissions: dict[str, None] = field(default_factory=dict)  # ordered, O(1) de-duplication
    seen: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Attributes:
    """One element's attributes, by resource id and (fallback) by local name."""

    by_id: dict[int, _Value] = field(default_factory=dict)
    by_name: dict[str, _Value] = field(default_factory=dict)

    def get(self, resource_id: int) -> _Value | None:
        return self.by_id.get(resource_id) or self.by_name.get(_ATTRIBUTE_NAMES[resource_id])


class _ManifestReader:
    """Walks the AXML chunks once, keeping the element stack and the fields found."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.strings: StringPool | None = None
        self.resource_map: tuple[int, ...] = ()
        self.stack: list[str] = []
        self.fields = _Fields()

    def read(self) -> _Fields:
        data = self.data
        if data[:1] == b"<" or data[:5].lstrip().startswith(b"<?xml"):
            raise Malformed("manifest is plain-text XML, not compiled binary XML")
        ctype, header_size, size = chunk_header(data, 0, len(data))
        if ctype != T_XML:
            raise Malformed(f"not binary XML (chunk type 0x{ctype:04x})")
        for ct, hs, sz, offset in children(data, header_size, size):
            if ct == T_STRING_POOL and self.strings is None:
                self.strings = StringPool(data, offset, offset + sz)
            elif ct == T_XML_RESOURCE_MAP:
                self.resource_map = struct.unpack_from(f"<{(sz - hs) // 4}I", data, offset + hs)
            elif ct == T_XML_START_ELEMENT:
                self._start_element(offset, hs, sz)
            elif ct == T_XML_END_ELEMENT:
                if not self.stack:
                    raise Malformed("unbalanced end element")
                self.stack.pop()
        if self.fields.package is None:
            raise Malformed("no <manifest package=...>")
        return self.fields

    def _start_element(self, offset: int, header_size: int, size: int) -> None:
        strings = self.strings
        if strings is None:
            raise Malformed("element before the string pool")
        _ns, name, attr_start, attr_size, attr_count = struct.unpack_from(
            "<IIHHH", self.data, offset + header_size
        )
        tag = strings.get(name)
        self.stack.append(tag)
        depth = len(self.stack)
        if depth == 1 and (tag != "manifest" or self.fields.package is not None):
            raise Malformed(f"unexpected root element <{tag}>")
        # Only <manifest> and its direct children matter (like PackageParser).
        if depth > 2 or (depth == 2 and tag not in _READ_CHILDREN):
            return
        first = offset + header_size + attr_start
        if attr_size < 20 or first + attr_count * attr_size > offset + size:
            raise Malformed("attributes out of bounds")
        attributes = _Attributes()
        for i in range(attr_count):
            self._read_attribute(strings, first + i * attr_size, attributes)
        _collect(tag, depth, attributes, self.fields)

    def _read_attribute(self, strings: StringPool, position: int, into: _Attributes) -> None:
        _ns, name, raw, _size, _zero, data_type, data = struct.unpack_from(
            "<IIIHBBI", self.data, position
        )
        if data_type == V_STRING:
            string: str | None = strings.get(data)
        else:
            string = strings.get(raw) if raw != NO_INDEX else None
        value = _Value(data_type, data, string)
        resource_id = self.resource_map[name] if name < len(self.resource_map) else 0
        if resource_id:
            into.by_id.setdefault(resource_id, value)
        else:  # no resource id: match by local name (e.g. "package", hand-made AXML)
            into.by_name.setdefault(strings.get(name), value)


def _collect(tag: str, depth: int, attributes: _Attributes, fields: _Fields) -> None:
    if depth == 1:
        package = attributes.by_name.get("package")
        if package is None or not package.string:
            raise Malformed("<manifest> has no package attribute")
        fields.package = package.string
        for resource_id in (A_VERSION_CODE, A_VERSION_NAME, A_VERSION_CODE_MAJOR):
            fields.attributes[_ATTRIBUTE_NAMES[resource_id]] = attributes.get(resource_id)
    elif tag in PERMISSION_TAGS:
        permission = attributes.get(A_NAME)
        if permission is not None and permission.string:
            fields.permissions.setdefault(permission.string, None)
    elif tag not in fields.seen:  # the first <uses-sdk> and <application> win
        fields.seen.add(tag)
        wanted = (A_MIN_SDK, A_TARGET_SDK) if tag == "uses-sdk" else (A_LABEL,)
        for resource_id in wanted:
            fields.attributes[_ATTRIBUTE_NAMES[resource_id]] = attributes.get(resource_id)


def _as_int(value: _Value | None, table: ResourceTable | None) -> int | None:
    if value is None:
        return None
    if value.data_type == V_INT_DEC:
        return value.data - (1 << 32) if value.data & 0x80000000 else value.data
    if value.data_type in (V_INT_HEX, V_INT_BOOLEAN):
        return value.data
    if value.data_type in REFERENCES:
        resolved = table.resolve(value.data) if table is not None else None
        if resolved and resolved[0] in (V_INT_DEC, V_INT_HEX):
            return resolved[1]
        return None
    try:
        return int((value.string or "").strip(), 0)
    except ValueError:
        return None  # e.g. a preview codename: minSdkVersion="Q"


def _as_str(value: _Value | None, table: ResourceTable | None) -> str | None:
    if value is None:
        return None
    if value.data_type in REFERENCES:
        return table.resolve_string(value.data) if table is not None else None
    if value.data_type in (V_INT_DEC, V_INT_HEX):
        return str(value.data)
    return value.string


def parse_manifest(manifest: bytes, arsc: bytes | None = None) -> ApkInfo:
    """Parse raw AXML bytes, resolving references through ``arsc`` when given.

    Raises:
        ManifestInvalidError: The manifest is not usable binary XML or has no package.
    """
    try:
        fields = _ManifestReader(manifest).read()
    except _MANIFEST_ERRORS as error:
        raise ManifestInvalidError(f"invalid AndroidManifest.xml: {error}") from error
    values = fields.attributes
    table = _resource_table(arsc) if _has_references(values) else None

    def safely(convert: Callable[[_Value | None, ResourceTable | None], T], key: str) -> T | None:
        try:
            return convert(values.get(key), table)
        except _RESOURCE_ERRORS as error:  # resources.arsc trouble never fails an upload
            log.warning("cannot resolve %s: %s", key, error)
            return None

    label_value = values.get("label")
    assert fields.package is not None
    return ApkInfo(
        package=fields.package,
        version_code=safely(_as_int, "versionCode"),
        version_name=safely(_as_str, "versionName"),
        min_sdk_version=safely(_as_int, "minSdkVersion"),
        target_sdk_version=safely(_as_int, "targetSdkVersion"),
        permissions=tuple(fields.permissions),
        label=safely(_as_str, "label") or None,
        label_resource_id=(
            label_value.data
            if label_value is not None and label_value.data_type in REFERENCES
            else None
        ),
        version_code_major=safely(_as_int, "versionCodeMajor"),
    )


def _has_references(values: dict[str, _Value | None]) -> bool:
    return any(v is not None and v.data_type in REFERENCES for v in values.values())


def _resource_table(arsc: bytes | None) -> ResourceTable | None:
    if arsc is None:
        return None
    try:
        return ResourceTable(arsc)
    except _RESOURCE_ERRORS as error:
        log.warning("ignoring unparsable resources.arsc: %s", error)
        return None
