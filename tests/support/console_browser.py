"""Browser steps for the console e2e tests: sign in by keyboard, wait for API states."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.support.waiting import wait_sync


def sign_in(page: Page, token: str, path: str = "/ui/") -> None:
    """Open ``path``, land on the sign-in form, type the token and press Enter (no mouse).

    Returns once the page has loaded: its deferred scripts (htmx, console.js) have run, so a
    key pressed on a button opens its dialog (the URL alone changes before they run).
    """
    page.goto(path)
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    expect(page.locator("#token")).to_be_focused()
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))
    page.wait_for_load_state("load")


def start_demo(api: httpx.Client, headers: dict[str, str], **body: Any) -> str:
    """POST /demo; the new saga's id."""
    answer = api.post("/demo", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    saga_id: str = answer.json()["id"]
    return saga_id


def saga_status(api: httpx.Client, headers: dict[str, str], saga_id: str) -> dict[str, Any]:
    """GET /sagas/{id}."""
    answer = api.get(f"/sagas/{saga_id}", headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def wait_status(
    api: httpx.Client, headers: dict[str, str], saga_id: str, statuses: set[str]
) -> dict[str, Any]:
    """Wait until the run is in one of ``statuses`` (over the API)."""
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(saga_status(api, headers, saga_id))
        return seen["status"] in statuses

    wait_sync(reached, timeout=20, interval=0.05, what=f"saga {saga_id} in {statuses}")
    return seen


def failed_until(seconds: float) -> str:
    """A ``fail_until`` that many seconds from now."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def api_count(api: httpx.Client, headers: dict[str, str], status: str) -> int:
    """How many runs ``GET /sagas`` lists in ``status`` (following every page)."""
    total, offset = 0, 0
    while offset is not None:
        page = api.get(
            "/sagas", params={"status": status, "limit": 200, "offset": offset}, headers=headers
        ).json()
        total += len(page["items"])
        offset = page["next_offset"]
    return total
