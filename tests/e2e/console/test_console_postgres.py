"""The console on PostgreSQL: counts, the failed queue and a retry, in headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from cloudphone.domain import Role
from tests.e2e.console.conftest import WAIT_MS, bearer, shot
from tests.support.console_browser import api_count, failed_until, sign_in, start_demo, wait_status
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.server import CloudphoneProcess, child_env, start_serve, token
from tests.support.waiting import wait_sync

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudphoneProcess]:
    """``cloudphone serve`` on a PostgreSQL database of its own."""
    url = create_postgres_database("cloudphone_console")
    workdir = tmp_path_factory.mktemp("console-pg")
    process = start_serve(workdir, child_env(workdir / "var", url))
    yield process
    process.stop()
    drop_postgres_database(url)


@pytest.fixture
def pg_page(chromium: Browser, pg_server: CloudphoneProcess) -> Iterator[Page]:
    """A fresh browser context on the PostgreSQL server."""
    context = chromium.new_context(
        base_url=pg_server.base_url, viewport={"width": 1400, "height": 900}
    )
    context.set_default_timeout(WAIT_MS)
    yield context.new_page()
    context.close()


def test_counts_and_a_live_retry_on_postgres(pg_page: Page, pg_server: CloudphoneProcess) -> None:
    """The overview's counts are the API's; a FAILED run is retried to COMPLETED in place."""
    alice = bearer("alice")
    with httpx.Client(base_url=str(pg_server.base_url), timeout=10) as api:
        done = start_demo(api, alice)
        until = failed_until(3)
        failed = start_demo(api, alice, fail_step="NOTIFY", fail_until=until)
        wait_status(api, alice, done, {"COMPLETED"})
        wait_status(api, alice, failed, {"FAILED"})
        sign_in(pg_page, token("root", Role.ADMIN), "/ui/")
        admin = bearer("root", Role.ADMIN)
        for status in ("COMPLETED", "FAILED"):
            expect(pg_page.locator(f'[data-count-status="{status}"]')).to_have_attribute(
                "data-count", str(api_count(api, admin, status))
            )
        shot(pg_page, "overview-postgres")
        pg_page.locator(f'[data-section=attention] tr[data-saga-id="{failed}"] a').first.click()
        wait_sync(lambda: pg_page.evaluate(f"Date.now() > Date.parse('{until}')"), timeout=10)
        pg_page.locator('[data-action="retry"]').click()
        pg_page.locator('[data-confirm="retry"]').click()
        expect(pg_page.locator("#saga-live")).to_have_attribute("data-status", "COMPLETED")
