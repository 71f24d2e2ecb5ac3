"""The apps API in-process over ASGI, on a test's own apps wiring."""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx

from tests.support.apps_harness import Apps
from tests.support.asgi import SECRET, headers, service_client  # noqa: F401 - re-exported for tests
from tests.support.waiting import eventually

TERMINAL = {"COMPLETED", "COMPENSATED", "TIMED_OUT", "FAILED"}


def multipart(
    data: bytes, *, description: str | None = None, description_first: bool = False
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body with ``file`` (and ``description``) and its content type."""
    boundary = uuid.uuid4().hex
    file_part = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="app.apk"\r\n'
            "Content-Type: application/vnd.android.package-archive\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
    )
    parts = [file_part]
    if description is not None:
        text = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="description"\r\n\r\n'
            f"{description}\r\n"
        ).encode()
        parts.insert(0 if description_first else 1, text)
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def apps_client(apps: Apps, data_dir: Path) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """An HTTP client on the real app, whose platform is this test's apps wiring."""
    return service_client(
        apps.db,
        apps.engine,
        data_dir,
        host="apps.test",
        settings={"apps": apps.service.config},
        apps=apps.service,
    )


async def post_apk(
    client: httpx.AsyncClient, who: dict[str, str], data: bytes, **options: Any
) -> httpx.Response:
    """``POST /apps`` with ``data`` as the multipart ``file`` (options as in :func:`multipart`)."""
    body, content_type = multipart(data, **options)
    return await client.post("/apps", content=body, headers={**who, "Content-Type": content_type})


async def finished(client: httpx.AsyncClient, who: dict[str, str], posted: httpx.Response) -> Any:
    """Wait for the upload's saga to complete; returns the application as it is then."""
    body = posted.json()

    async def saga() -> Any:
        return (await client.get(body["saga_url"], headers=who)).json()

    run = await eventually(saga, lambda r: r.get("status") in TERMINAL, timeout=30)
    assert run["status"] == "COMPLETED", run
    response = await client.get(f"/apps/{body['application']['id']}", headers=who)
    assert response.status_code == 200, response.text
    return response.json()
