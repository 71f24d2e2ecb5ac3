"""``resources.arsc``: just enough of the resource table to resolve ``@string``/``@integer``.

A manifest may say ``android:label="@string/app_name"``; this module follows such references
(chained ones too) to a value, choosing the configuration Android would use for a neutral
device: the default config, then one without a locale, then English, then any. Dense, sparse,
OFFSET16 and Android 14 COMPACT entries are understood.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from cloudphone.apk.chunks import (
    NO_INDEX,
    REFERENCES,
    T_STRING_POOL,
    T_TABLE,
    T_TABLE_PACKAGE,
    T_TABLE_TYPE,
    V_INT_DEC,
    V_INT_HEX,
    V_STRING,
    Malformed,
    StringPool,
    children,
    chunk_header,
    u16,
    u32,
)

_FLAG_SPARSE = 0x01
_FLAG_OFFSET16 = 0x02
_ENTRY_COMPLEX = 0x01
_ENTRY_COMPACT = 0x08
_MAX_REFERENCE_DEPTH = 8


class _TypeChunk(NamedTuple):
    """One ``ResTable_type`` chunk: the entries of one type in one configuration."""

    config: bytes
    offset: int
    header_size: int
    flags: int
    entry_count: int
    entries_start: int


class ResourceTable:
    """The parsed table: global string pool plus the type chunks of every package.

    Raises:
        Malformed: The table's structure is broken (the caller decides whether that matters).
    """

    def __init__(self, data: bytes) -> None:
        ctype, header_size, size = chunk_header(data, 0, len(data))
        if ctype != T_TABLE:
            raise Malformed("not a resource table")
        self._data = data
        self.strings: StringPool | None = None
        self._types: dict[tuple[int, int], list[_TypeChunk]] = {}
        self._package_ids: list[int] = []
        for ct, hs, sz, offset in children(data, header_size, size):
            if ct == T_STRING_POOL and self.strings is None:
                self.strings = StringPool(data, offset, offset + sz)
            elif ct == T_TABLE_PACKAGE:
                self._read_package(offset, hs, sz)

    def _read_package(self, offset: int, header_size: int, size: int) -> None:
        data = self._data
        package_id = u32(data, offset + 8)
        self._package_ids.append(package_id)
        type_id_offset = u32(data, offset + 284) if header_size >= 288 else 0
        for ct, hs, sz, chunk in children(data, offset + header_size, offset + size):
            if ct != T_TABLE_TYPE or hs < 24:
                continue
            type_id, flags = data[chunk + 8], data[chunk + 9]
            count, entries_start = struct.unpack_from("<II", data, chunk + 12)
            width = 2 if flags & _FLAG_OFFSET16 and not flags & _FLAG_SPARSE else 4
            if hs + count * width > sz or entries_start > sz:
                continue  # inconsistent counts: skip rather than scan garbage
            self._types.setdefault((package_id, type_id + type_id_offset), []).append(
                _TypeChunk(data[chunk + 20 : chunk + hs], chunk, hs, flags, count, entries_start)
            )

    def resolve(self, resource_id: int, depth: int = 0) -> tuple[int, int] | None:
        """Follow references to a value ``(data_type, data)`` in the best config, or None."""
        if depth > _MAX_REFERENCE_DEPTH:
            return None
        package = resource_id >> 24
        type_id = (resource_id >> 16) & 0xFF
        index = resource_id & 0xFFFF
        if package == 0 and len(self._package_ids) == 1:  # dynamic reference to "own" package
            package = self._package_ids[0]
        candidates = sorted(self._types.get((package, type_id), ()), key=_config_rank)
        for chunk in candidates:
            value = self._entry_value(chunk, index)
            if value is None:
                continue
            if value[0] in REFERENCES and value[1]:
                return self.resolve(value[1], depth + 1)
            return value
        return None

    def resolve_string(self, resource_id: int) -> str | None:
        """The string (or decimal integer) a reference resolves to, or None."""
        value = self.resolve(resource_id)
        if value is None or self.strings is None:
            return None
        if value[0] == V_STRING:
            return self.strings.get(value[1])
        if value[0] in (V_INT_DEC, V_INT_HEX):
            return str(value[1])
        return None

    def _entry_value(self, chunk: _TypeChunk, index: int) -> tuple[int, int] | None:
        offset = self._entry_offset(chunk, index)
        if offset is None:
            return None
        data = self._data
        position = chunk.offset + chunk.entries_start + offset
        entry_size, entry_flags = struct.unpack_from("<HH", data, position)
        if entry_flags & _ENTRY_COMPACT:  # Android 14+: the type sits in the flags' high byte
            return entry_flags >> 8, u32(data, position + 4)
        if entry_flags & _ENTRY_COMPLEX:  # a bag (style, plural…), not a simple value
            return None
        _size, _zero, data_type, value = struct.unpack_from("<HBBI", data, position + entry_size)
        return data_type, value

    def _entry_offset(self, chunk: _TypeChunk, index: int) -> int | None:
        data, table = self._data, chunk.offset + chunk.header_size
        if chunk.flags & _FLAG_SPARSE:  # sorted (u16 index, u16 offset / 4) pairs
            for i in range(chunk.entry_count):
                if u16(data, table + 4 * i) == index:
                    return u16(data, table + 4 * i + 2) * 4
            return None
        if index >= chunk.entry_count:
            return None
        if chunk.flags & _FLAG_OFFSET16:
            short = u16(data, table + 2 * index)
            return None if short == 0xFFFF else short * 4
        offset = u32(data, table + 4 * index)
        return None if offset == NO_INDEX else offset


def _config_rank(chunk: _TypeChunk) -> int:
    """Lower is better: default config, then locale-less, then English, then anything."""
    body = chunk.config[4:]
    if not any(body):
        return 0
    language = body[4:6]
    if not any(language):
        return 1
    return 2 if language == b"en" else 3
