"""Apps through a real ``cloudphone serve`` (uvicorn, embedded worker, SQLite, filesystem store).

The spool is swept on start, an upload streams through uvicorn to AVAILABLE and back out as a
download, and a body over the limit is refused while it streams.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from cloudphone.deployment import STAMP_FILE
from cloudphone.domain import Role
from tests.support.apps_harness import apk
from tests.support.server import CloudphoneProcess, auth, child_env, start_serve
from tests.support.waiting import eventually

LIMIT = 1024 * 1024
STALE = "f" * 32 + ".apk"
TERMINAL = {"COMPLETED", "COMPENSATED", "TIMED_OUT", "FAILED"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudphoneProcess]:
    """``cloudphone serve`` with a 1 MiB upload limit and a leftover file in its spool."""
    workdir = tmp_path_factory.mktemp("apps-serve")
    spool = workdir / "var" / "uploads"
    spool.mkdir(parents=True)
    (spool / STALE).write_bytes(b"left by a crash")
    then = time.time() - 3600
    os.utime(spool / STALE, (then, then))
    env = child_env(workdir / "var", None, CLOUDPHONE_APPS__MAX_UPLOAD_BYTES=str(LIMIT))
    process = start_serve(workdir, env)
    yield process
    process.stop()


@pytest.fixture
async def client(server: CloudphoneProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=str(server.base_url), timeout=30) as http:
        yield http


async def streamed(data: bytes, boundary: str) -> AsyncIterator[bytes]:
    """A multipart body sent in 64 KiB pieces, without Content-Length."""
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.apk"\r\n\r\n'
    ).encode()
    for start in range(0, len(data), 65_536):
        yield data[start : start + 65_536]
    yield f"\r\n--{boundary}--\r\n".encode()


async def post(client: httpx.AsyncClient, who: dict[str, str], data: bytes) -> httpx.Response:
    boundary = uuid.uuid4().hex
    return await client.post(
        "/apps",
        content=streamed(data, boundary),
        headers={**who, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )


def test_the_spool_was_swept_on_start(server: CloudphoneProcess) -> None:
    assert not (server.log_path.parent / "var" / "uploads" / STALE).exists()


async def test_upload_download_delete_through_uvicorn(client: httpx.AsyncClient) -> None:
    alice, admin = auth("alice-apps"), auth("root-apps", Role.ADMIN)
    data = apk(f"com.e2e{uuid.uuid4().hex[:8]}.app", 5, big_asset_size=300_000)
    posted = await post(client, alice, data)
    assert posted.status_code == 202, posted.text
    body = posted.json()

    async def saga() -> Any:
        return (await client.get(body["saga_url"], headers=alice)).json()

    run = await eventually(saga, lambda r: r.get("status") in TERMINAL, timeout=30)
    assert run["status"] == "COMPLETED", run
    app_id = body["application"]["id"]
    download = await client.get(f"/apps/{app_id}/download", headers=alice)
    assert download.status_code == 200
    assert download.content == data
    deleted = await client.delete(f"/apps/{app_id}", headers=admin)
    assert (deleted.status_code, deleted.json()["status"]) == (200, "DELETED")


async def test_a_streamed_body_over_the_limit_is_413(
    client: httpx.AsyncClient, server: CloudphoneProcess
) -> None:
    data = apk(f"com.e2e{uuid.uuid4().hex[:8]}.big", 1, big_asset_size=2 * LIMIT)
    response = await post(client, auth("alice-apps"), data)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    spooled = os.listdir(server.log_path.parent / "var" / "uploads")
    assert [name for name in spooled if name != STAMP_FILE] == []
