"""The apps API over HTTP (in-process ASGI): status codes, bodies, nothing stored on 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cloudphone.apps.config import AppsConfig
from cloudphone.domain import Role
from tests.support.apk_builder import build_apk_bytes, corrupt_variants
from tests.support.apps_harness import Apps, MakeApps, apk, fetch_bytes, sha256
from tests.support.apps_http import apps_client, finished, headers, multipart, post_apk

BAD = corrupt_variants(build_apk_bytes(package="com.example.src", label="Src"))


@pytest.fixture
async def client(apps: Apps, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with apps_client(apps, tmp_path / "var") as http:
        yield http


@pytest.fixture
def alice(unique: str) -> dict[str, str]:
    return headers(f"alice-{unique}")


@pytest.fixture
def admin(unique: str) -> dict[str, str]:
    return headers(f"admin-{unique}", Role.ADMIN)


async def assert_nothing_stored(apps: Apps) -> None:
    assert await apps.objects() == []
    assert await apps.run_count() == 0
    assert apps.spooled() == []


async def test_upload_202_then_available_and_downloadable(
    apps: Apps, client: httpx.AsyncClient, alice: dict[str, str], package: str
) -> None:
    data = apk(package, 3, version_name="3.0")
    response = await post_apk(client, alice, data, description="nightly")
    assert response.status_code == 202, response.text
    body = response.json()
    app = body["application"]
    assert response.headers["location"] == f"/apps/{app['id']}"
    assert body["saga_url"] == f"/sagas/{body['saga_id']}"
    assert (app["status"], app["package_name"], app["version_code"]) == ("UPLOADING", package, 3)
    assert (app["size"], app["sha256"], app["description"]) == (len(data), sha256(data), "nightly")
    done = await finished(client, alice, response)
    assert (done["status"], done["in_catalog"], done["is_latest"]) == ("AVAILABLE", False, False)
    download = await client.get(f"/apps/{app['id']}/download", headers=alice)
    if download.status_code == 307:  # S3: a presigned URL, fetched without our credentials
        assert await fetch_bytes(download.headers["location"]) == data
        link = await client.get(f"/apps/{app['id']}/download?redirect=false", headers=alice)
        assert link.status_code == 200
        assert await fetch_bytes(link.json()["url"]) == data
    else:
        assert download.status_code == 200, download.text
        assert download.content == data
        assert f"{package}-3.apk" in download.headers["content-disposition"]
    listed = await client.get(f"/apps?package={package}&latest=true", headers=alice)
    assert [a["id"] for a in listed.json()["items"]] == [app["id"]]


async def test_description_may_come_before_or_after_the_file(
    apps: Apps, client: httpx.AsyncClient, alice: dict[str, str], package: str
) -> None:
    first = await post_apk(client, alice, apk(package, 1), description="a", description_first=True)
    second = await post_apk(client, alice, apk(package, 2), description="b")
    assert [r.json()["application"]["description"] for r in (first, second)] == ["a", "b"]


async def test_standard_multipart_from_httpx_works(
    client: httpx.AsyncClient, alice: dict[str, str], package: str
) -> None:
    response = await client.post(
        "/apps",
        files={"file": ("app.apk", apk(package, 1), "application/octet-stream")},
        data={"description": "via httpx"},
        headers=alice,
    )
    assert response.status_code == 202, response.text


async def test_duplicate_version_is_409_and_stores_nothing_more(
    apps: Apps, client: httpx.AsyncClient, alice: dict[str, str], package: str
) -> None:
    first = await post_apk(client, alice, apk(package, 1))
    await finished(client, alice, first)
    objects, runs = await apps.objects(), await apps.run_count()
    again = await post_apk(client, alice, apk(package, 1))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate_version"
    assert (await apps.objects(), await apps.run_count()) == (objects, runs)


@pytest.mark.parametrize(
    ("variant", "code"),
    [
        ("not_a_zip", "invalid_zip"),
        ("truncated_zip", "invalid_zip"),
        ("no_manifest", "manifest_missing"),
        ("manifest_garbage", "manifest_invalid"),
    ],
)
async def test_not_an_apk_is_422_with_its_reason(
    apps: Apps, client: httpx.AsyncClient, alice: dict[str, str], variant: str, code: str
) -> None:
    response = await post_apk(client, alice, BAD[variant])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"].startswith("not a valid APK")
    await assert_nothing_stored(apps)


async def test_over_the_limit_is_413_from_content_length_or_while_streaming(
    make_apps: MakeApps, tmp_path: Path, alice: dict[str, str], package: str
) -> None:
    apps = await make_apps(config=AppsConfig(max_upload_bytes=200_000))
    body, content_type = multipart(apk(package, 1, big_asset_size=400_000))

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: found while streaming
        for start in range(0, len(body), 65_536):
            yield body[start : start + 65_536]

    async with apps_client(apps, tmp_path / "var") as client:
        sized = await client.post(
            "/apps", content=body, headers={**alice, "Content-Type": content_type}
        )
        streamed = await client.post(
            "/apps", content=chunked(), headers={**alice, "Content-Type": content_type}
        )
    for response in (sized, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "payload_too_large"
    await assert_nothing_stored(apps)


@pytest.mark.parametrize(
    ("content_type", "body", "fragment"),
    [
        ("application/json", b'{"file": "x"}', "multipart/form-data"),
        ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="x"'
         b"\r\n\r\n1\r\n--b--\r\n", "missing multipart field 'file'"),
        ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="file"'
         b"\r\n\r\nPK\x03\x04", "closing boundary"),
    ],
)  # fmt: skip
async def test_malformed_requests_are_422(
    apps: Apps,
    client: httpx.AsyncClient,
    alice: dict[str, str],
    content_type: str,
    body: bytes,
    fragment: str,
) -> None:
    response = await client.post(
        "/apps", content=body, headers={**alice, "Content-Type": content_type}
    )
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]["message"]
    await assert_nothing_stored(apps)


async def test_same_idempotency_key_answers_200_with_the_first_upload(
    client: httpx.AsyncClient, alice: dict[str, str], package: str
) -> None:
    keyed = {**alice, "Idempotency-Key": "upload-1"}
    first = await post_apk(client, keyed, apk(package, 1))
    second = await post_apk(client, keyed, apk(package, 1))
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["saga_id"] == second.json()["saga_id"]


async def test_a_deleted_app_is_gone_and_a_repeated_delete_is_404(
    client: httpx.AsyncClient, alice: dict[str, str], admin: dict[str, str], package: str
) -> None:
    posted = await post_apk(client, alice, apk(package, 1))
    app_id = (await finished(client, alice, posted))["id"]
    deleted = await client.delete(f"/apps/{app_id}", headers=admin)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["status"] == "DELETED"
    assert (await client.get(f"/apps/{app_id}", headers=alice)).status_code == 404
    assert (await client.get(f"/apps/{app_id}/download", headers=admin)).status_code == 409
    assert (await client.delete(f"/apps/{app_id}", headers=admin)).status_code == 404


async def test_unauthenticated_upload_is_401_before_reading(client: httpx.AsyncClient) -> None:
    body, content_type = multipart(b"anything")
    response = await client.post("/apps", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 401
