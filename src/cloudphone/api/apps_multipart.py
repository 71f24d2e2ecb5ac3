"""A ``multipart/form-data`` request body read as it arrives, for uploads of any size.

Starlette's form parsing spools every file before the route runs; this reader instead feeds
``request.stream()`` through python-multipart's streaming parser and yields the bytes of the
one file field as they come, so the service can write, hash and size-check them on the fly
and memory stays flat. Small text fields (before or after the file) are collected, bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from cloudphone.api.nul_guard import check_text
from cloudphone.domain import InvalidInputError

MAX_FIELD_BYTES = 16 * 1024
"""Largest text field accepted."""
MAX_FIELDS = 16
"""Most text fields accepted."""
MULTIPART_OVERHEAD = 64 * 1024
"""Room for boundaries, part headers and text fields on top of the file's size."""


class MultipartUpload:
    """The parts of one request body: the file field as a stream, text fields in a dict.

    Args:
        request: The request whose body to read (not read before).
        file_field: Name of the file field.

    Raises:
        InvalidInputError: The request is not ``multipart/form-data`` with a boundary.
    """

    def __init__(self, request: Request, *, file_field: str = "file") -> None:
        kind, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise InvalidInputError(
                "send the APK as multipart/form-data with a 'file' field", code="not_multipart"
            )
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._request = request
        self._file_field = file_field
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._current: str | None = None  # field name of the part being read
        self._in_file = False
        self._file_seen = False
        self._field_data = bytearray()
        self._pending: list[bytes] = []
        self._ended = False

    def description(self) -> str | None:
        """The ``description`` field (complete once :meth:`file_chunks` is exhausted)."""
        return self.fields.get("description")

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The file field's bytes as they arrive; reads the whole body to its end.

        Raises:
            InvalidInputError: Malformed multipart, no (or two) file fields, a text field too
                large, or a body that stopped before its closing boundary.
        """
        try:
            async for data in self._request.stream():
                self._parser.write(data)
                while self._pending:
                    yield self._pending.pop(0)
            self._parser.finalize()
        except MultipartParseError as error:
            raise InvalidInputError(f"malformed multipart body: {error}") from error
        except ClientDisconnect:
            raise InvalidInputError("the client disconnected before the upload ended") from None
        if not self._ended:
            raise InvalidInputError("the multipart body ended before its closing boundary")
        if not self._file_seen:
            raise InvalidInputError(f"missing multipart field {self._file_field!r}")

    # -- parser callbacks -----------------------------------------------------------------

    def _on_part_begin(self) -> None:
        self._disposition = b""
        self._current = None
        self._field_data.clear()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        if len(self._header_value) > MAX_FIELD_BYTES:
            raise InvalidInputError("a multipart part header is too long")

    def _on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _kind, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise InvalidInputError("a multipart part has no Content-Disposition name")
        field = name.decode("utf-8", "replace")
        self._current = check_text(field, ["body", field])
        self._in_file = self._current == self._file_field
        if self._in_file:
            if self._file_seen:
                raise InvalidInputError(f"more than one {self._file_field!r} field")
            self._file_seen = True
            filename = options.get(b"filename")
            decoded = filename.decode("utf-8", "replace") if filename else None
            self.filename = check_text(decoded, ["body", "file", "filename"]) if decoded else None
        elif len(self.fields) >= MAX_FIELDS:
            raise InvalidInputError(f"more than {MAX_FIELDS} multipart fields")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])
            return
        self._field_data += data[start:end]
        if len(self._field_data) > MAX_FIELD_BYTES:
            raise InvalidInputError(f"multipart field {self._current!r} is too large")

    def _on_part_end(self) -> None:
        if not self._in_file and self._current is not None:
            text = self._field_data.decode("utf-8", "replace")
            self.fields[self._current] = check_text(text, ["body", self._current])
        self._in_file = False

    def _on_end(self) -> None:
        self._ended = True
