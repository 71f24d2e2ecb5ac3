"""Forking a finished saga from the console in headless Chromium against ``cloudphone serve``."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from cloudphone.domain import Role
from tests.e2e.console.conftest import bearer, shot
from tests.support.console_browser import sign_in, start_demo, wait_status
from tests.support.server import token


def test_fork_a_finished_saga_from_a_chosen_step_and_follow_the_link(
    page: Page, api: httpx.Client
) -> None:
    """Choose the step in the confirmation; a refusal shows in place; the result links on."""
    alice = bearer("alice")
    original = start_demo(api, alice)
    wait_status(api, alice, original, {"COMPLETED"})
    sign_in(page, token("root", Role.ADMIN), f"/ui/sagas/{original}")
    page.locator('[data-action="fork"]').click()
    dialog = page.locator('[data-confirm-dialog="fork"]')
    expect(dialog).to_be_visible()
    dialog.locator("[data-step-choice]").select_option("PREPARE")
    dialog.locator('[data-confirm="fork"]').click()
    expect(page.locator('[data-result="error"]')).to_contain_text("not after the pivot COMMIT")

    page.locator('[data-action="fork"]').click()
    expect(dialog).to_be_visible()
    dialog.locator("[data-step-choice]").select_option("NOTIFY")
    dialog.locator("textarea").fill("the notice bounced")
    shot(page, "saga-fork-dialog")
    dialog.locator('[data-confirm="fork"]').click()
    expect(page.locator('[data-result="ok"]')).to_be_visible()
    link = page.locator("[data-result-link]")
    fork_id = (link.get_attribute("href") or "").rsplit("/", 1)[-1]
    expect(page.locator(f'[data-fork="{fork_id}"]')).to_have_count(1)
    expect(page.locator('[data-event-kind="run_forked"] [data-note]')).to_have_text(
        "the notice bounced"
    )
    link.click()
    expect(page.locator("#saga-live")).to_have_attribute("data-saga-id", fork_id)
    expect(page.locator(f'[data-forked-from="{original}"]')).to_have_count(1)
    expect(page.locator("#saga-live")).to_have_attribute("data-status", "COMPLETED")
    shot(page, "saga-fork")
    fork = wait_status(api, bearer("root", Role.ADMIN), fork_id, {"COMPLETED"})
    assert (fork["forked_from"], fork["current_step"]) == (original, None)
