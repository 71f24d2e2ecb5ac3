"""A NUL character anywhere in a request is a 422 naming the field, on every route and database.

PostgreSQL cannot store NUL: before the edge refused them, each of these was a 500 there (and
silently stored on SQLite). The walk covers every operation of the OpenAPI schema, each path
and query parameter, the Idempotency-Key header and every field of each request body.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cloudphone.api.nul_guard import PROBLEM
from cloudphone.domain import Role
from tests.support.server import auth

NUL_TEXT = "a\x00b"
ADMIN = auth("root", Role.ADMIN)


def _problem(response: httpx.Response, where: str) -> str | None:
    """None for a 422 ``invalid_request`` naming ``where``; else what came instead."""
    request = f"{response.request.method} {response.request.url.path} ({where})"
    if response.status_code != 422:
        return f"{request}: {response.status_code} {response.text[:200]}"
    error = response.json()["error"]
    if error["code"] != "invalid_request" or error["message"] != f"{where}: {PROBLEM}":
        return f"{request}: {error}"
    return None


def _refused(response: httpx.Response, where: str) -> None:
    assert _problem(response, where) is None


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield method.upper(), path, operation


def _fill(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def _body_fields(spec: dict[str, Any], operation: dict[str, Any]) -> tuple[str | None, list[str]]:
    """The request body's media type and its top-level field names."""
    content = operation.get("requestBody", {}).get("content", {})
    for media, entry in content.items():
        schema = entry["schema"]
        for option in schema.get("anyOf", [schema]):
            ref = option.get("$ref")
            if ref is not None:
                option = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
            if option.get("properties"):
                return media, list(option["properties"])
    return None, []


def _multipart(field: str) -> tuple[bytes, str]:
    """An upload with a NUL in ``field`` (in the file name for ``file``), written by hand.

    Clients percent-encode control characters in file names; an attacker need not.
    """
    boundary = "nulboundary"
    filename = NUL_TEXT if field == "file" else "a"
    parts = [f'Content-Disposition: form-data; name="file"; filename="{filename}.apk"\r\n\r\nPK']
    if field != "file":
        parts.insert(0, f'Content-Disposition: form-data; name="{field}"\r\n\r\n{NUL_TEXT}')
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts) + f"--{boundary}--\r\n"
    return body.encode(), f"multipart/form-data; boundary={boundary}"


async def _spec(api: httpx.AsyncClient) -> dict[str, Any]:
    spec: dict[str, Any] = (await api.get("/openapi.json")).json()
    return spec


async def test_every_path_query_and_header_parameter_refuses_nul(
    api: httpx.AsyncClient,
) -> None:
    """Each path parameter and each query parameter of every route, one at a time."""
    checked, problems = 0, []
    for method, path, operation in _operations(await _spec(api)):
        parameters = operation.get("parameters", [])
        in_path = {p["name"]: "x" for p in parameters if p["in"] == "path"}
        for parameter in parameters:
            name, where = parameter["name"], parameter["in"]
            if where == "path":
                url = _fill(path, {**in_path, name: "a%00b"})
                response = await api.request(method, url, headers=ADMIN)
            elif where == "query":
                url = _fill(path, in_path)
                response = await api.request(method, url, params={name: NUL_TEXT}, headers=ADMIN)
            else:
                response = await api.request(
                    method, _fill(path, in_path), headers={**ADMIN, name: NUL_TEXT}
                )
                name = name.lower()  # ASGI gives header names in lower case
            problems.append(_problem(response, f"{where}.{name}"))
            checked += 1
    assert [p for p in problems if p is not None] == []
    assert checked >= 30  # the walk really walked (every resource has ids and filters)


async def test_every_body_field_refuses_nul(api: httpx.AsyncClient) -> None:
    """Each field of every JSON body, and the multipart upload's fields and file name."""
    checked: set[str] = set()
    problems = []
    spec = await _spec(api)
    for method, path, operation in _operations(spec):
        url = _fill(path, {p["name"]: "x" for p in operation.get("parameters", [])})
        media, fields = _body_fields(spec, operation)
        for field in fields:
            if media == "application/json":
                response = await api.request(method, url, json={field: NUL_TEXT}, headers=ADMIN)
                where = f"body.{field}"
            else:
                content, content_type = _multipart(field)
                headers = {**ADMIN, "content-type": content_type}
                response = await api.request(method, url, content=content, headers=headers)
                where = "body.file.filename" if field == "file" else f"body.{field}"
            problems.append(_problem(response, where))
            checked.add(f"{method} {path} {field}")
    assert [p for p in problems if p is not None] == []
    for expected in (
        "POST /orders description",
        "POST /payments/{payment_id}/refunds reason",
        "POST /demo message",
        "POST /devices name",
        "POST /apps description",
        "POST /apps file",
    ):
        assert expected in checked


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"message": "ok", "extra": {"deep": ["fine", NUL_TEXT]}}, "body.extra.deep.1"),
        ({"message": "ok", NUL_TEXT: 1}, "body.a\\u0000b"),
    ],
    ids=["nested", "key"],
)
async def test_nested_values_and_keys_are_named(
    api: httpx.AsyncClient, body: dict[str, Any], where: str
) -> None:
    """The location goes down to the list item or names the key itself."""
    _refused(await api.post("/demo", json=body, headers=auth("alice")), where)


async def test_clean_bodies_still_reach_the_route(api: httpx.AsyncClient) -> None:
    """An escaped backslash before ``u0000`` is text, not NUL: the request goes through."""
    response = await api.post("/demo", json={"message": "\\u0000"}, headers=auth("alice"))
    assert response.status_code == 202, response.text


async def test_an_unknown_path_with_nul_is_refused_too(api: httpx.AsyncClient) -> None:
    """Outside any route the location is the path itself."""
    _refused(await api.get("/no-such%00route", headers=auth("alice")), "path")
