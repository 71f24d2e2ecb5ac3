"""The operator console in headless Chromium against ``cloudphone serve`` on SQLite."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import BrowserContext, Page, expect

from cloudphone.domain import Role
from tests.e2e.console.conftest import bearer, shot
from tests.support.console_browser import (
    api_count,
    failed_until,
    sign_in,
    start_demo,
    wait_status,
)
from tests.support.server import CloudphoneProcess, token
from tests.support.waiting import wait_sync

ADMIN = bearer("root", Role.ADMIN)
STATUSES = ("PENDING", "RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "TIMED_OUT", "FAILED")


def open_failed_saga(page: Page, api: httpx.Client, headers: dict[str, str]) -> str:
    """Start a demo run that fails after its pivot, wait until FAILED, open it as an admin."""
    saga_id = start_demo(api, headers, fail_step="NOTIFY")
    wait_status(api, headers, saga_id, {"FAILED"})
    sign_in(page, token("root", Role.ADMIN), f"/ui/sagas/{saga_id}")
    return saga_id


def test_serve_prints_the_console_url(server: CloudphoneProcess) -> None:
    """``cloudphone serve`` says where the console is."""
    assert f"console: {server.base_url}/ui" in server.log(tail=1_000_000)


def test_a_request_without_a_session_goes_to_the_sign_in_page(page: Page) -> None:
    """Any console page without a session redirects to the sign-in form."""
    page.goto("/ui/sagas")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/sagas$"))
    expect(page.locator("form input[name=token]")).to_be_visible()
    shot(page, "login")


def test_sign_in_by_keyboard_and_the_overview_counts_equal_the_apis(
    page: Page, api: httpx.Client
) -> None:
    """Sign in without a mouse; each status count on the overview is what GET /sagas lists."""
    alice = bearer("alice")
    ids = [start_demo(api, alice) for _ in range(3)]
    ids.append(start_demo(api, alice, fail_step="NOTIFY"))
    ids.append(start_demo(api, alice, fail_step="PREPARE"))
    for saga_id in ids:
        wait_status(api, alice, saga_id, {"COMPLETED", "FAILED", "COMPENSATED"})
    sign_in(page, token("root", Role.ADMIN), "/ui/")
    for status in STATUSES:
        tile = page.locator(f'[data-count-status="{status}"]')
        expect(tile).to_have_attribute("data-count", str(api_count(api, ADMIN, status)))
    expect(page.locator("#chart-runs canvas")).to_have_count(1)
    expect(page.locator("[data-section=attention] tr[data-saga-id]").first).to_be_visible()
    shot(page, "overview")


def test_filter_and_search_the_list_without_reloading(page: Page, api: httpx.Client) -> None:
    """Choosing a status narrows the rows in place; searching an id finds that run."""
    bob = bearer("bob-list")
    failed = start_demo(api, bob, fail_step="NOTIFY")
    done = start_demo(api, bob)
    wait_status(api, bob, failed, {"FAILED"})
    wait_status(api, bob, done, {"COMPLETED"})
    sign_in(page, token("root", Role.ADMIN), "/ui/sagas")
    page.evaluate("window.__sameDocument = true")
    page.get_by_label("Started by").fill("bob-list")
    page.get_by_label("Status").select_option("FAILED")
    rows = page.locator("#saga-rows tr[data-saga-id]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-saga-id", failed)
    expect(page).to_have_url(re.compile(r"status=FAILED"))
    shot(page, "sagas-filtered")
    page.get_by_label("Status").select_option("")
    page.get_by_label("Search by id").fill(done)
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-saga-id", done)
    page.get_by_label("Search by id").fill("no-such-saga-or-resource")
    expect(page.locator("[data-empty=sagas]")).to_be_visible()
    shot(page, "sagas-empty-search")
    assert page.evaluate("window.__sameDocument") is True
    page.goto("/ui/sagas")
    shot(page, "sagas")


def test_retry_a_failed_saga_and_watch_it_complete_without_a_reload(
    page: Page, api: httpx.Client
) -> None:
    """A run FAILED by a fault is retried from its page and reaches COMPLETED in place."""
    alice = bearer("alice")
    until = failed_until(3)
    saga_id = start_demo(api, alice, fail_step="NOTIFY", fail_until=until)
    wait_status(api, alice, saga_id, {"FAILED"})
    sign_in(page, token("root", Role.ADMIN), f"/ui/sagas/{saga_id}")
    live = page.locator("#saga-live")
    expect(live).to_have_attribute("data-status", "FAILED")
    expect(page.locator('[data-step="NOTIFY"]')).to_have_attribute("data-step-state", "failed")
    shot(page, "saga-failed")
    page.evaluate("window.__sameDocument = true")
    wait_sync(lambda: page.evaluate(f"Date.now() > Date.parse('{until}')"), timeout=10)
    page.locator('[data-action="retry"]').click()
    dialog = page.locator('[data-confirm-dialog="retry"]')
    expect(dialog).to_be_visible()
    dialog.locator("textarea").fill("fault cleared")
    dialog.locator('[data-confirm="retry"]').click()
    expect(page.locator('[data-result="ok"]')).to_be_visible()
    expect(live).to_have_attribute("data-status", "COMPLETED")
    expect(page.locator('[data-event-kind="saga_completed"]')).to_have_count(1)
    expect(page.locator('[data-event-kind="operator_retry"] [data-note]')).to_have_text(
        "fault cleared"
    )
    assert page.evaluate("window.__sameDocument") is True
    assert wait_status(api, alice, saga_id, {"COMPLETED"})["status"] == "COMPLETED"
    shot(page, "saga-completed")


def test_cancel_a_running_saga(page: Page, api: httpx.Client) -> None:
    """Cancel during a slow step: the run compensates, shown live."""
    alice = bearer("alice")
    saga_id = start_demo(api, alice, work_ms=20_000)
    wait_status(api, alice, saga_id, {"RUNNING"})
    sign_in(page, token("root", Role.ADMIN), f"/ui/sagas/{saga_id}")
    expect(page.locator('[data-step="PREPARE"]')).to_have_attribute("data-step-state", "running")
    shot(page, "saga-running")
    page.locator('[data-action="cancel"]').click()
    page.locator('[data-confirm="cancel"]').click()
    expect(page.locator('[data-result="ok"]')).to_be_visible()
    expect(page.locator("#saga-live")).to_have_attribute("data-status", "COMPENSATED")
    expect(page.locator('[data-step="PREPARE"]')).to_have_attribute(
        "data-step-state", "compensated"
    )
    expect(page.locator('[data-event-kind="cancel_requested"]')).to_have_count(1)


def test_resolve_with_a_note_by_keyboard_only(page: Page, api: httpx.Client) -> None:
    """Tab to Resolve, Enter opens the confirmation, type the note, Tab, Enter: it is recorded."""
    alice = bearer("alice")
    saga_id = open_failed_saga(page, api, alice)
    for _ in range(60):
        if page.evaluate("document.activeElement.dataset.action") == "resolve":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.action") == "resolve"
    page.keyboard.press("Enter")
    dialog = page.locator('[data-confirm-dialog="resolve"]')
    expect(dialog).to_be_visible()
    expect(dialog.locator("textarea")).to_be_focused()
    page.keyboard.type("refunded by hand in the provider's dashboard")
    shot(page, "saga-confirm-resolve")
    page.keyboard.press("Tab")  # "Keep it as it is"
    page.keyboard.press("Tab")  # "Resolve"
    expect(dialog.locator('[data-confirm="resolve"]')).to_be_focused()
    page.keyboard.press("Enter")
    result = page.locator('[data-result="ok"]')
    expect(result).to_be_focused()
    note = page.locator('[data-event-kind="operator_resolved"] [data-note]')
    expect(note).to_have_text("refunded by hand in the provider's dashboard")
    assert api.get(f"/sagas/{saga_id}", headers=alice).json()["needs_attention"] is False


def test_escape_closes_a_confirmation_without_acting(page: Page, api: httpx.Client) -> None:
    """Escape dismisses the dialog; nothing is done."""
    alice = bearer("alice")
    saga_id = open_failed_saga(page, api, alice)
    page.locator('[data-action="retry"]').focus()
    page.keyboard.press("Enter")
    dialog = page.locator('[data-confirm-dialog="retry"]')
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert api.get(f"/sagas/{saga_id}", headers=alice).json()["status"] == "FAILED"


def test_a_refused_action_shows_the_reason_in_place(page: Page, api: httpx.Client) -> None:
    """An action someone else made moot is refused with the engine's reason, on the page."""
    alice = bearer("alice")
    saga_id = open_failed_saga(page, api, alice)
    page.locator('[data-action="resolve"]').click()
    resolved = api.post(f"/sagas/{saga_id}/resolve", json={"note": "by API"}, headers=ADMIN)
    assert resolved.status_code == 200
    dialog = page.locator('[data-confirm-dialog="resolve"]')
    dialog.locator("textarea").fill("too late")
    dialog.locator('[data-confirm="resolve"]').click()
    error = page.locator('[data-result="error"]')
    expect(error).to_contain_text("already resolved")
    shot(page, "saga-action-refused")


def test_a_user_sees_neither_others_sagas_nor_admin_buttons(page: Page, api: httpx.Client) -> None:
    """Bob's list holds only his runs; his FAILED run has no action; Alice's page is a 404."""
    alices = start_demo(api, bearer("alice"), fail_step="NOTIFY")
    bobs = start_demo(api, bearer("bob"), fail_step="NOTIFY")
    wait_status(api, bearer("bob"), bobs, {"FAILED"})
    sign_in(page, token("bob"), "/ui/sagas")
    ids = page.locator("#saga-rows tr[data-saga-id]")
    expect(ids.first).to_be_visible()
    assert alices not in ids.evaluate_all("rows => rows.map(r => r.dataset.sagaId)")
    assert bobs in ids.evaluate_all("rows => rows.map(r => r.dataset.sagaId)")
    page.goto(f"/ui/sagas/{bobs}")
    expect(page.locator("#saga-live")).to_have_attribute("data-status", "FAILED")
    expect(page.locator("[data-action]")).to_have_count(0)
    shot(page, "saga-as-user")
    answer = page.goto(f"/ui/sagas/{alices}")
    assert answer is not None
    assert answer.status == 404
    shot(page, "error-not-found")


def test_a_forged_post_without_the_csrf_token_is_refused(page: Page, api: httpx.Client) -> None:
    """With the session cookie but without the CSRF token, an action is a 403 and does nothing."""
    alice = bearer("alice")
    saga_id = start_demo(api, alice, fail_step="NOTIFY")
    wait_status(api, alice, saga_id, {"FAILED"})
    sign_in(page, token("root", Role.ADMIN), "/ui/")
    forged = page.request.post(f"/ui/sagas/{saga_id}/resolve", form={"note": "forged"})
    assert forged.status == 403
    assert api.get(f"/sagas/{saga_id}", headers=alice).json()["resolution"] is None


def test_live_refresh_pauses_while_the_tab_is_hidden(page: Page, api: httpx.Client) -> None:
    """A hidden tab skips its polls; showing it again refreshes at once."""
    sign_in(page, token("root", Role.ADMIN), "/ui/sagas")
    page.evaluate(
        "Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    expect(page.locator("body")).to_have_attribute("data-poll-paused", "true", timeout=15_000)
    with page.expect_request(re.compile(r"/ui/sagas$")):
        page.evaluate(
            "Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});"
            "document.dispatchEvent(new Event('visibilitychange'))"
        )
    expect(page.locator("body")).not_to_have_attribute("data-poll-paused", "true")


def test_live_refresh_waits_while_a_confirmation_is_open(page: Page, api: httpx.Client) -> None:
    """A poll during an open dialog is held; Escape gives the focus back, then it catches up."""
    alice = bearer("alice")
    saga_id = open_failed_saga(page, api, alice)
    live = page.locator("#saga-live")
    page.locator('[data-action="retry"]').focus()
    page.keyboard.press("Enter")
    expect(page.locator('[data-confirm-dialog="retry"]')).to_be_visible()
    resolved = api.post(f"/sagas/{saga_id}/resolve", json={"note": "by API"}, headers=ADMIN)
    assert resolved.status_code == 200
    page.evaluate("htmx.trigger('#saga-live', 'refresh')")
    expect(live).to_have_attribute("data-poll-held", "true")
    expect(page.locator("[data-resolution]")).to_have_count(0)
    page.keyboard.press("Escape")
    expect(page.locator("[data-resolution]")).to_contain_text("by API")
    expect(live).not_to_have_attribute("data-poll-held", "true")


def test_a_refresh_keeps_the_focus_on_its_action_button(page: Page, api: httpx.Client) -> None:
    """Keyboard users do not lose their place when the page refreshes under them."""
    open_failed_saga(page, api, bearer("alice"))
    live = page.locator("#saga-live")
    page.locator('[data-action="resolve"]').focus()
    page.evaluate("document.getElementById('saga-live').dataset.before = 'refresh'")
    page.evaluate("htmx.trigger('#saga-live', 'refresh')")
    expect(live).not_to_have_attribute("data-before", "refresh")
    expect(page.locator('[data-action="resolve"]')).to_be_focused()


def test_devices_and_quotas_pages(page: Page, api: httpx.Client, context: BrowserContext) -> None:
    """A device with its ADB endpoint and sagas; usage against limits per user."""
    alice = bearer("alice")
    created = api.post(
        "/devices", json={"name": "phone-1", "cpu": 1, "memory_mb": 1024}, headers=alice
    )
    assert created.status_code == 202, created.text
    device_id = created.json()["device"]["id"]
    wait_status(api, alice, created.json()["saga_id"], {"COMPLETED"})
    sign_in(page, token("root", Role.ADMIN), "/ui/devices")
    row = page.locator(f'tr[data-device-id="{device_id}"]')
    expect(row).to_have_attribute("data-status", "RUNNING")
    shot(page, "devices")
    row.get_by_role("link", name="phone-1").click()
    expect(page.locator(f'[data-device-id="{device_id}"]')).to_be_visible()
    shot(page, "device")
    page.goto("/ui/quotas")
    expect(page.locator('[data-quota="alice"] [data-usage="devices"]')).to_contain_text("1 /")
    shot(page, "quotas")


def test_signing_out_ends_the_session(page: Page, server: CloudphoneProcess) -> None:
    """Sign out, and the console asks to sign in again; the token never reached the log."""
    secret = token("root", Role.ADMIN)
    sign_in(page, secret, "/ui/")
    assert secret not in page.url
    assert secret not in server.log(tail=10_000_000)
    page.locator("[data-sign-out]").click()
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/$"))
