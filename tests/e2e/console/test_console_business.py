"""The console's business views in headless Chromium: payments and refunds, apps.

The server is ``serve --no-worker`` (API and console) plus one ``cloudphone worker`` whose
sandbox provider never answers (``CLOUDPHONE_BILLING__SANDBOX__ERROR_RATE=1``). The sandbox's
ledger lives in the shared database, so the two processes see one provider: payments (made by
the API) go through, a refund (driven by the worker) reaches NEEDS_ATTENTION, and the admin's
reconcile (run by the API process, whose provider answers) finds out what happened, as it
would once a real provider is reachable again. App uploads need no provider.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from cloudphone.domain import Role
from tests.e2e.console.conftest import bearer, browser_tab, shot
from tests.support.apps_harness import apk
from tests.support.apps_http import multipart
from tests.support.console_browser import sign_in, wait_status
from tests.support.server import CloudphoneProcess, child_env, start_serve, start_worker, token
from tests.support.waiting import wait_sync

ADMIN = bearer("root", Role.ADMIN)


FLAKY_PROVIDER = {
    "CLOUDPHONE_BILLING__SANDBOX__ERROR_RATE": "1",
    "CLOUDPHONE_BILLING__REFUND_RETRY_INITIAL_SECONDS": "0.05",
}
"""A sandbox that never answers (every call a 503), and refund retries in milliseconds."""


@dataclass
class Stack:
    """The processes of this module, on one SQLite database."""

    workdir: Path
    env: dict[str, str]
    api: CloudphoneProcess
    processes: list[CloudphoneProcess]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``serve --no-worker`` with a healthy sandbox and a worker whose sandbox never answers."""
    workdir = tmp_path_factory.mktemp("console-business")
    env = child_env(workdir / "var")
    api = start_serve(workdir, env, "--no-worker", name="api")
    running = Stack(workdir, env, api, [api])
    try:
        running.processes.append(start_worker(workdir, {**env, **FLAKY_PROVIDER}, "flaky"))
        yield running
    finally:
        for process in reversed(running.processes):
            process.stop()


@pytest.fixture(scope="module")
def server(stack: Stack) -> CloudphoneProcess:
    """The API and console everyone's browser uses (its provider answers)."""
    return stack.api


@pytest.fixture(scope="module")
def flaky_api(stack: Stack) -> CloudphoneProcess:
    """A second ``serve --no-worker`` on the same database whose provider never answers."""
    process = start_serve(
        stack.workdir, {**stack.env, **FLAKY_PROVIDER}, "--no-worker", name="flaky-api"
    )
    stack.processes.append(process)
    return process


@pytest.fixture
def other_page(chromium: Browser, server: CloudphoneProcess) -> Iterator[Page]:
    """A tab in a second, separate browser context (another user's browser)."""
    yield from browser_tab(chromium, server.base_url)


@pytest.fixture
def flaky_page(chromium: Browser, flaky_api: CloudphoneProcess) -> Iterator[Page]:
    """A tab on the API whose provider never answers."""
    yield from browser_tab(chromium, flaky_api.base_url)


def stuck_refund(
    api: httpx.Client, headers: dict[str, str], amount: int
) -> tuple[dict[str, Any], str]:
    """A paid payment and a refund of ``amount`` of it in NEEDS_ATTENTION: the payment, the id."""
    payment = paid_payment(api, headers, amount + 1000)
    requested = api.post(
        f"/payments/{payment['id']}/refunds", json={"amount": amount}, headers=headers
    )
    assert requested.status_code == 202, requested.text
    refund_id: str = requested.json()["refund"]["id"]
    refund_in(api, headers, refund_id, "NEEDS_ATTENTION")
    return payment, refund_id


def paid_payment(api: httpx.Client, headers: dict[str, str], amount: int) -> dict[str, Any]:
    """Create an order and pay it at the sandbox (over the API); the payment."""
    order = api.post(
        "/orders",
        json={"amount": amount, "currency": "EUR", "description": "cloud phone, 1 month"},
        headers=headers,
    )
    assert order.status_code == 201, order.text
    payment = api.post(f"/orders/{order.json()['id']}/pay", headers=headers)
    assert payment.status_code == 201, payment.text
    body: dict[str, Any] = payment.json()
    assert body["status"] == "SUCCESS"
    return body


def refund_in(api: httpx.Client, headers: dict[str, str], refund_id: str, status: str) -> None:
    """Wait until ``GET /refunds/{id}`` says ``status``."""

    def reached() -> bool:
        return bool(api.get(f"/refunds/{refund_id}", headers=headers).json()["status"] == status)

    wait_sync(reached, timeout=30, interval=0.1, what=f"refund {refund_id} {status}")


def uploaded(
    api: httpx.Client, headers: dict[str, str], name: str, version: int = 3, package: str = ""
) -> tuple[dict[str, Any], bytes]:
    """Upload an APK over the API and wait until it is AVAILABLE; the app and its bytes.

    A fresh package unless ``package`` names one.
    """
    package = package or f"com.e2e{uuid.uuid4().hex[:8]}.{name}"
    data = apk(package, version, version_name=f"1.{version}", label=name.title())
    body, content_type = multipart(data, description=f"The {name} app")
    posted = api.post("/apps", content=body, headers={**headers, "Content-Type": content_type})
    assert posted.status_code == 202, posted.text
    wait_status(api, headers, posted.json()["saga_id"], {"COMPLETED"})
    return posted.json()["application"], data


def test_business_pages_have_empty_states(page: Page) -> None:
    """A user with nothing: each list says so (and how to make one) instead of an empty table."""
    sign_in(page, token("nobody"), "/ui/payments")
    expect(page.locator("[data-empty=payments]")).to_be_visible()
    shot(page, "payments-empty")
    page.goto("/ui/apps")
    expect(page.locator("[data-empty=apps]")).to_be_visible()
    shot(page, "apps-empty")
    answer = page.goto("/ui/refunds/no-such-refund")
    assert answer is not None
    assert answer.status == 404
    shot(page, "refund-not-found")


def test_an_admin_reconciles_a_refund_that_needs_attention(page: Page, api: httpx.Client) -> None:
    """From the overview's queue to the refund's page; reconcile shows the new status in place."""
    rita = bearer("rita")
    payment, refund_id = stuck_refund(api, rita, 1500)
    sign_in(page, token("root", Role.ADMIN), "/ui/")
    queued = page.locator(f'[data-attention=refunds] tr[data-refund-id="{refund_id}"]')
    expect(queued).to_have_attribute("data-status", "NEEDS_ATTENTION")
    shot(page, "overview-attention")
    queued.get_by_role("link").click()
    expect(page).to_have_url(re.compile(f"/ui/refunds/{refund_id}$"))
    live = page.locator("#refund-live")
    expect(live).to_have_attribute("data-status", "NEEDS_ATTENTION")
    expect(page.locator("[data-needs-attention]")).to_be_visible()
    shot(page, "refund-needs-attention")
    page.evaluate("window.__sameDocument = true")
    page.locator('[data-action="reconcile"]').click()
    dialog = page.locator('[data-confirm-dialog="reconcile"]')
    expect(dialog).to_be_visible()
    expect(dialog.locator('[data-confirm="reconcile"]')).to_be_focused()
    shot(page, "refund-confirm-reconcile")
    page.keyboard.press("Enter")
    expect(page.locator('[data-result="ok"]')).to_be_focused()
    expect(live).to_have_attribute("data-status", "FAILED")
    expect(page.locator("[data-resolution]")).to_contain_text("reconciled from the provider")
    expect(page.locator('[data-action="reconcile"]')).to_have_count(0)
    assert page.evaluate("window.__sameDocument") is True
    shot(page, "refund-reconciled")
    held = api.get(f"/payments/{payment['id']}", headers=rita).json()
    assert (held["status"], held["held_by_refund"]) == ("SUCCESS", None)
    page.locator(f'[data-payment-link="{payment["id"]}"]').first.click()
    expect(page.locator("#payment-live")).to_have_attribute("data-status", "SUCCESS")
    expect(page.locator(f'tr[data-refund-id="{refund_id}"]')).to_have_attribute(
        "data-status", "FAILED"
    )
    shot(page, "payment")
    page.goto("/ui/payments")
    expect(page.locator(f'tr[data-payment-id="{payment["id"]}"]')).to_be_visible()
    shot(page, "payments")
    page.goto("/ui/refunds")
    expect(page.locator(f'tr[data-refund-id="{refund_id}"]')).to_be_visible()
    shot(page, "refunds")
    page.get_by_label("Status").select_option("NEEDS_ATTENTION")
    expect(page.locator("[data-empty=refunds]")).to_be_visible()
    page.goto("/ui/orders")
    expect(page.locator("tr[data-order-id]").first).to_be_visible()
    shot(page, "orders")


def test_a_user_sees_their_refund_without_the_reconcile_button(
    page: Page, api: httpx.Client
) -> None:
    """The owner of a refund that needs attention reads why, but is offered no admin action."""
    sam = bearer("sam")
    _, refund_id = stuck_refund(api, sam, 1200)
    sign_in(page, token("sam"), f"/ui/refunds/{refund_id}")
    expect(page.locator("[data-needs-attention]")).to_be_visible()
    expect(page.locator("[data-action]")).to_have_count(0)
    expect(page.locator("dialog")).to_have_count(0)
    shot(page, "refund-as-user")
    forged = page.request.post(f"/ui/refunds/{refund_id}/reconcile")
    assert forged.status == 403
    assert api.get(f"/refunds/{refund_id}", headers=sam).json()["status"] == "NEEDS_ATTENTION"


def test_a_reconcile_the_provider_does_not_answer_says_so_in_place(
    flaky_page: Page, api: httpx.Client
) -> None:
    """Through an API whose provider is still down: a 503 shown in place; nothing changes."""
    tess = bearer("tess")
    payment, refund_id = stuck_refund(api, tess, 800)
    sign_in(flaky_page, token("root", Role.ADMIN), f"/ui/refunds/{refund_id}")
    flaky_page.locator('[data-action="reconcile"]').click()
    flaky_page.locator('[data-confirm="reconcile"]').click()
    error = flaky_page.locator('[data-result="error"]')
    expect(error).to_contain_text("the provider did not answer")
    expect(flaky_page.locator("#refund-live")).to_have_attribute("data-status", "NEEDS_ATTENTION")
    expect(flaky_page.locator('[data-action="reconcile"]')).to_be_visible()
    shot(flaky_page, "refund-reconcile-unanswered")
    assert api.get(f"/payments/{payment['id']}", headers=tess).json()["status"] == "REFUNDING"


def test_an_admin_publishes_an_upload_and_another_user_sees_it_in_the_catalog(
    page: Page, other_page: Page, api: httpx.Client
) -> None:
    """Private until published from its page (confirmed, in place); then in Bob's catalog."""
    alice = bearer("alice")
    first, _ = uploaded(api, alice, "notes", 3)
    app, _ = uploaded(api, alice, "notes", 4, first["package_name"])
    sign_in(other_page, token("bob"), "/ui/apps?scope=catalog")
    expect(other_page.locator(f'tr[data-app-id="{app["id"]}"]')).to_have_count(0)
    sign_in(page, token("root", Role.ADMIN), "/ui/apps?scope=all")
    row = page.locator(f'tr[data-app-id="{app["id"]}"]')
    expect(row).to_have_attribute("data-published", "false")
    expect(
        page.locator(f'tbody[data-package="{app["package_name"]}"] tr[data-app-id]')
    ).to_have_count(2)
    shot(page, "apps")
    row.get_by_role("link").first.click()
    live = page.locator("#app-live")
    expect(live).to_have_attribute("data-status", "AVAILABLE")
    shot(page, "app-private")
    page.evaluate("window.__sameDocument = true")
    page.locator('[data-action="publish"]').click()
    dialog = page.locator('[data-confirm-dialog="publish"]')
    expect(dialog).to_be_visible()
    shot(page, "app-confirm-publish")
    dialog.locator('[data-confirm="publish"]').click()
    expect(page.locator('[data-result="ok"]')).to_be_visible()
    expect(live).to_have_attribute("data-published", "true")
    expect(page.locator('[data-action="unpublish"]')).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True
    shot(page, "app-published")
    other_page.reload()
    bobs = other_page.locator(f'tr[data-app-id="{app["id"]}"]')
    expect(bobs).to_have_attribute("data-published", "true")
    expect(other_page.locator(f'tr[data-app-id="{first["id"]}"]')).to_have_count(0)
    expect(other_page.locator(f'[data-latest="{app["id"]}"]')).to_be_visible()
    shot(other_page, "apps-catalog-as-user")


def test_a_refused_publish_shows_the_reason_in_place(page: Page, api: httpx.Client) -> None:
    """The upload was deleted while the page was open: publishing it is refused, with why."""
    dan = bearer("dan")
    app, _ = uploaded(api, dan, "gone")
    sign_in(page, token("root", Role.ADMIN), f"/ui/apps/{app['id']}")
    page.locator('[data-action="publish"]').click()
    assert api.delete(f"/apps/{app['id']}", headers=dan).status_code == 200
    page.locator('[data-confirm="publish"]').click()
    expect(page.locator('[data-result="error"]')).to_contain_text("only an AVAILABLE application")
    expect(page.locator("#app-live")).to_have_attribute("data-status", "DELETED")
    shot(page, "app-publish-refused")


def test_a_user_downloads_their_app(page: Page, api: httpx.Client) -> None:
    """The Download button hands the uploader the very bytes uploaded (same SHA-256)."""
    carol = bearer("carol")
    app, data = uploaded(api, carol, "camera")
    sign_in(page, token("carol"), f"/ui/apps/{app['id']}")
    expect(page.locator("[data-action]")).to_have_count(0)
    expect(page.locator(f'[data-copy="{app["sha256"]}"]').first).to_be_visible()
    shot(page, "app-as-user")
    with page.expect_download() as download:
        page.locator(f'[data-download="{app["id"]}"]').first.click()
    got = download.value
    assert got.suggested_filename == f"{app['package_name']}-{app['version_code']}.apk"
    path = got.path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert app["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_context_without_a_session_cannot_download(context: BrowserContext) -> None:
    """The download, like every console page, needs a session: no cookie, no APK."""
    answer = context.request.get("/ui/apps/anything/download", max_redirects=0)
    assert answer.status == 303
    assert "/ui/login" in answer.headers["location"]


def test_a_device_page_lists_its_installed_app(page: Page, api: httpx.Client) -> None:
    """Install an upload on a running device: its page shows the app INSTALLED, with its saga."""
    erin = bearer("erin")
    app, _ = uploaded(api, erin, "maps")
    created = api.post(
        "/devices", json={"name": "phone-apps", "cpu": 1, "memory_mb": 1024}, headers=erin
    )
    assert created.status_code == 202, created.text
    device_id = created.json()["device"]["id"]
    wait_status(api, erin, created.json()["saga_id"], {"COMPLETED"})
    install = api.post(f"/devices/{device_id}/apps", json={"app_id": app["id"]}, headers=erin)
    assert install.status_code == 202, install.text
    saga_id = install.json()["saga_id"]
    wait_status(api, erin, saga_id, {"COMPLETED"})

    sign_in(page, token("erin"), f"/ui/devices/{device_id}")
    row = page.locator(f'tr[data-package="{app["package_name"]}"]')
    expect(row).to_have_attribute("data-status", "INSTALLED")
    expect(row.locator(f'[data-saga-link="{saga_id}"]')).to_be_visible()
    expect(page.locator('[data-empty="installations"]')).to_have_count(0)
    shot(page, "device-with-apps")
