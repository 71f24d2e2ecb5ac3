"""``/docs`` works offline: the page references only the app's own URLs, which all load."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cloudphone.api.app import create_app
from cloudphone.api.docs import ASSETS
from cloudphone.settings import load_settings
from tests.support.server import TEST_SECRET


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app without a started platform: the docs need none."""
    app = create_app(load_settings(data_dir=tmp_path / "var", jwt_secret=TEST_SECRET))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://docs.test") as http:
        yield http


async def test_docs_reference_no_external_url(client: httpx.AsyncClient) -> None:
    """No CDN, no favicon host, no online validator: nothing outside the app."""
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert re.findall(r"(?:https?:)?//[\w.-]+", page.text) == []
    assert '"validatorUrl": null' in page.text
    assert "url: '/openapi.json'" in page.text


async def test_every_asset_the_page_names_loads_from_the_package(
    client: httpx.AsyncClient,
) -> None:
    """Each src/href answers 200 with the vendored file's bytes and a fitting type."""
    page = (await client.get("/docs")).text
    urls = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(urls) == 3  # stylesheet, favicon, bundle
    types = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        name = url.split("?", 1)[0].rsplit("/", 1)[1]
        assert asset.content == (ASSETS / name).read_bytes(), url
        assert types[Path(name).suffix] in asset.headers["content-type"], url
    openapi = await client.get("/openapi.json")
    assert openapi.status_code == 200
    assert "/docs" not in openapi.json()["paths"]


async def test_the_cdn_pages_are_gone(client: httpx.AsyncClient) -> None:
    """ReDoc would need a CDN: it is not served; neither is FastAPI's own OAuth redirect."""
    assert (await client.get("/redoc")).status_code == 404
    assert (await client.get("/docs/oauth2-redirect")).status_code == 404
