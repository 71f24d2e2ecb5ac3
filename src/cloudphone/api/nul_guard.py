"""Refuse NUL characters (U+0000) anywhere in a request, before any route runs.

PostgreSQL text cannot hold NUL (``invalid byte sequence for encoding "UTF8": 0x00``) while
SQLite stores it, so a NUL that got through would be a 500 on one database and a silent oddity
on the other. One pure ASGI middleware checks every request the same way, on both databases:
the path (naming the path parameter it falls in), the query string, the headers and JSON
bodies, and answers 422 ``invalid_request`` naming the field. Multipart uploads are streamed
to disk and never buffered here: their reader checks its field names, file name and text
fields with :func:`check_text` as it parses them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudphone.api.errors import error_json
from cloudphone.domain import InvalidInputError

NUL = "\x00"
PROBLEM = "must not contain the NUL character (\\u0000)"
"""The message of every refusal, after the field's location."""


class NulGuardMiddleware:
    """Answers 422 to a request with a NUL in its path, query, headers or JSON body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the request; pass it on unchanged (its body replayed) when it is clean."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = _in_path(scope) or _in_query(scope) or _in_headers(scope)
        if where is None and _is_json(scope):
            body, receive = await _buffered(receive)
            where = _in_json(body)
        if where is None:
            await self.app(scope, receive, send)
            return
        response = error_json(
            422, "invalid_request", _message(where), details=[{"loc": where, "msg": PROBLEM}]
        )
        await response(scope, receive, send)


def check_text(value: str, where: Sequence[str]) -> str:
    """``value`` unchanged; raises InvalidInputError (422) if it contains a NUL.

    For request parts the middleware does not see whole (streamed multipart fields).
    """
    if NUL in value:
        raise InvalidInputError(_message(list(where)), code="invalid_request")
    return value


def _message(where: list[str]) -> str:
    return f"{'.'.join(_printable(part) for part in where)}: {PROBLEM}"


def _printable(part: str) -> str:
    return part.replace(NUL, "\\u0000")


def _in_path(scope: Scope) -> list[str] | None:
    path: str = scope.get("path", "")
    if NUL not in path:
        return None
    name = _path_parameter(scope.get("app"), path.removeprefix(scope.get("root_path", "")))
    return ["path"] if name is None else ["path", name]


def _path_parameter(app: Any, path: str) -> str | None:
    """The parameter of the route template (from the OpenAPI paths) where the NUL is."""
    openapi = getattr(app, "openapi", None)
    if openapi is None:
        return None
    for template in openapi()["paths"]:
        match = compile_path(template)[0].match(path)
        if match is not None:
            return next((k for k, v in match.groupdict().items() if NUL in v), None)
    return None


def _in_query(scope: Scope) -> list[str] | None:
    raw: bytes = scope.get("query_string", b"")
    if b"%00" not in raw and b"\x00" not in raw:
        return None
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if NUL in name or NUL in value:
            return ["query", name]
    return None


def _in_headers(scope: Scope) -> list[str] | None:
    for name, value in scope.get("headers", ()):
        if b"\x00" in value or b"\x00" in name:
            return ["header", name.decode("latin-1")]
    return None


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI would decode the body as JSON (``application/json`` or ``…+json``)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            kind: bytes = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or (
                kind.startswith(b"application/") and kind.endswith(b"+json")
            )
    return False


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body, and a ``receive`` that hands it to the app as if unread."""
    chunks: list[bytes] = []
    last: Message | None = None
    while True:
        message = await receive()
        if message["type"] != "http.request":
            last = message  # the client went away: the app sees the disconnect
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replay: list[Message] = [{"type": "http.request", "body": body, "more_body": last is not None}]
    if last is not None:
        replay.append(last)

    async def replayed() -> Message:
        return replay.pop(0) if replay else await receive()

    return body, replayed


def _in_json(body: bytes) -> list[str] | None:
    # A NUL can only be in valid JSON as the escape \u0000 (a raw one is a decode error
    # FastAPI reports itself), so most bodies are never decoded twice.
    if b"\\u0000" not in body:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None  # FastAPI answers 422 json_invalid
    return _in_value(document, ["body"])


def _in_value(value: Any, where: list[str]) -> list[str] | None:
    if isinstance(value, str):
        return where if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = [*where, key] if NUL in key else _in_value(item, [*where, key])
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _in_value(item, [*where, str(index)])
            if found is not None:
                return found
    return None
