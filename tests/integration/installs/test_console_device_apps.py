"""The console's device page lists the device's applications and links their sagas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from cloudphone.api.auth import issue_token
from cloudphone.domain import Role
from tests.support.asgi import SECRET
from tests.support.console import elements, signed_in
from tests.support.installs_stack import Installs, user


def token(name: str) -> str:
    """A user's bearer token for the test platform."""
    return issue_token(SECRET, name, Role.USER, ttl=timedelta(hours=1))


@pytest.fixture
async def console(installs: Installs) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same app for the console (its own cookie jar)."""
    async with installs.client() as client:
        yield client


async def test_the_device_page_shows_installations_and_their_sagas(
    installs: Installs, console: httpx.AsyncClient, unique: str
) -> None:
    """INSTALLED with its version, app link and saga (with the saga's status); others: 404."""
    name = f"ann-{unique}"
    ann = user(name)
    device = await installs.device(ann)
    page = f"/ui/devices/{device['id']}"
    await signed_in(console, token(name))
    empty = await console.get(page)
    assert elements(empty.text, "data-empty", "installations")

    app = await installs.app(ann, f"com.t{unique}.notes", 3)
    run = await installs.installed(ann, device, app)
    html = (await console.get(page)).text
    [row] = [e for e in elements(html, "data-package") if e.tag == "tr"]
    assert (row.attrs["data-package"], row.attrs["data-status"]) == (
        f"com.t{unique}.notes",
        "INSTALLED",
    )
    assert elements(html, "data-saga-link", run["id"])
    assert f'href="/ui/apps/{app["id"]}"' in html
    assert elements(html, "data-badge", "COMPLETED")

    async with installs.client() as stranger:
        await signed_in(stranger, token(f"bob-{unique}"))
        assert (await stranger.get(page)).status_code == 404
