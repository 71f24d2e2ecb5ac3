"""Android binary resource chunks (``ResChunk_header``) and string pools, bounds-checked.

Shared by the binary XML (AXML) manifest reader and the ``resources.arsc`` reader. Every offset
and count is checked against its chunk before use, so crafted input raises :class:`Malformed`
instead of reading out of bounds or scanning for long.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

T_STRING_POOL = 0x0001
T_TABLE = 0x0002
T_XML = 0x0003
T_XML_START_NS = 0x0100
T_XML_END_NS = 0x0101
T_XML_START_ELEMENT = 0x0102
T_XML_END_ELEMENT = 0x0103
T_XML_RESOURCE_MAP = 0x0180
T_TABLE_PACKAGE = 0x0200
T_TABLE_TYPE = 0x0201
T_TABLE_TYPE_SPEC = 0x0202

# Res_value data types
V_REFERENCE = 0x01
V_STRING = 0x03
V_DYNAMIC_REFERENCE = 0x07
V_INT_DEC = 0x10
V_INT_HEX = 0x11
V_INT_BOOLEAN = 0x12
REFERENCES = frozenset({V_REFERENCE, V_DYNAMIC_REFERENCE})
NO_INDEX = 0xFFFFFFFF

_UTF8_FLAG = 0x100


class Malformed(Exception):
    """A structural error inside a binary chunk (internal; callers map it to ApkError)."""


def u16(data: bytes, offset: int) -> int:
    """Little-endian unsigned 16-bit value at ``offset``."""
    return int(struct.unpack_from("<H", data, offset)[0])


def u32(data: bytes, offset: int) -> int:
    """Little-endian unsigned 32-bit value at ``offset``."""
    return int(struct.unpack_from("<I", data, offset)[0])


def chunk_header(data: bytes, offset: int, end: int) -> tuple[int, int, int]:
    """Validate the chunk header at ``offset``; returns ``(type, header_size, size)``."""
    if offset + 8 > end:
        raise Malformed(f"truncated chunk header at {offset}")
    ctype, header_size, size = struct.unpack_from("<HHI", data, offset)
    if header_size < 8 or size < header_size or offset + size > end:
        raise Malformed(f"bad chunk 0x{ctype:04x} at {offset} (header {header_size}, size {size})")
    return ctype, header_size, size


def children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """The chunks laid end to end in ``[start, end)`` as ``(type, header_size, size, offset)``."""
    offset = start
    while offset + 8 <= end:
        ctype, header_size, size = chunk_header(data, offset, end)
        yield ctype, header_size, size, offset
        offset += size


class StringPool:
    """A ``ResStringPool``; strings are decoded lazily (arsc pools can hold 100k+ strings)."""

    def __init__(self, data: bytes, offset: int, end: int) -> None:
        ctype, header_size, size = chunk_header(data, offset, end)
        if ctype != T_STRING_POOL or header_size < 28:
            raise Malformed("expected a string pool")
        count, _styles, flags, strings_start, _ = struct.unpack_from("<5I", data, offset + 8)
        if header_size + 4 * count > size:
            raise Malformed("string pool offsets out of bounds")
        self._data = data
        self._utf8 = bool(flags & _UTF8_FLAG)
        self._base = offset + strings_start
        self._end = offset + size
        self._offsets: tuple[int, ...] = struct.unpack_from(
            f"<{count}I", data, offset + header_size
        )
        self._cache: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._offsets)

    def get(self, index: int) -> str:
        """The string at ``index``; lone surrogates are replaced (safe for JSON)."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        if not 0 <= index < len(self._offsets):
            raise Malformed(f"string index {index} out of range")
        position = self._base + self._offsets[index]
        if position >= self._end:
            raise Malformed("string offset out of bounds")
        raw, codec = self._utf8_at(position) if self._utf8 else self._utf16_at(position)
        # surrogatepass + round trip: joins CESU-8 style pairs, replaces lone surrogates.
        text = (
            raw.decode(codec, "surrogatepass")
            .encode("utf-16-le", "surrogatepass")
            .decode("utf-16-le", "replace")
        )
        self._cache[index] = text
        return text

    def _utf8_at(self, position: int) -> tuple[bytes, str]:
        position = self._length8(position)[1]  # skip the length in UTF-16 units
        length, position = self._length8(position)
        return self._slice(position, length), "utf-8"

    def _utf16_at(self, position: int) -> tuple[bytes, str]:
        length = u16(self._data, position)
        position += 2
        if length & 0x8000:
            length = ((length & 0x7FFF) << 16) | u16(self._data, position)
            position += 2
        return self._slice(position, 2 * length), "utf-16-le"

    def _slice(self, position: int, length: int) -> bytes:
        if position + length > self._end:
            raise Malformed("string data out of bounds")
        return self._data[position : position + length]

    def _length8(self, position: int) -> tuple[int, int]:
        first = self._data[position]
        if first & 0x80:
            return ((first & 0x7F) << 8) | self._data[position + 1], position + 2
        return first, position + 1
