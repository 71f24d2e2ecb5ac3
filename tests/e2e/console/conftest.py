"""The console in headless Chromium (Debian's ``/usr/bin/chromium``) against ``cloudphone serve``.

Playwright drives the browser installed by the system (``.ci/run`` installs Debian's
``chromium``); Playwright's own browser download is never used. Each test gets a fresh browser
context; the browser itself runs on a temporary profile. Screenshots of every page go to
``var/screenshots`` (or ``$CLOUDPHONE_SCREENSHOTS``), printed at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from cloudphone.domain import Role
from tests.support.server import REPO_ROOT, CloudphoneProcess, child_env, start_serve, token

CHROMIUM = os.environ.get("CLOUDPHONE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(os.environ.get("CLOUDPHONE_SCREENSHOTS", REPO_ROOT / "var" / "screenshots"))
WAIT_MS = 20_000


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say where the screenshots are."""
    if SCREENSHOTS.exists() and any(SCREENSHOTS.iterdir()):
        terminalreporter.write_line(f"console screenshots: {SCREENSHOTS}")


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    """The Playwright driver, for this package's tests only.

    Its sync API keeps an event loop running in the main thread while it lives, which every
    asyncio test after it would trip over ("Runner.run() cannot be called from a running
    event loop"): it stops when the last console test is done.
    """
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    """Headless Debian Chromium on a fresh temporary profile."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: .ci/run installs Debian's"
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudphoneProcess]:
    """``cloudphone serve`` (API + console + worker) on SQLite."""
    workdir = tmp_path_factory.mktemp("console")
    process = start_serve(workdir, child_env(workdir / "var"))
    yield process
    process.stop()


@pytest.fixture
def context(chromium: Browser, server: CloudphoneProcess) -> Iterator[BrowserContext]:
    """A fresh browser context (no cookies) on the server; fails on CSP violations."""
    ctx = chromium.new_context(base_url=server.base_url, viewport={"width": 1400, "height": 900})
    ctx.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    ctx.on(
        "console",
        lambda message: (
            problems.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    ctx.on("weberror", lambda error: problems.append(str(error.error)))
    yield ctx
    ctx.close()
    assert not problems, f"browser console errors: {problems}"


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """A tab of the context."""
    return context.new_page()


@pytest.fixture
def api(server: CloudphoneProcess) -> Iterator[httpx.Client]:
    """An HTTP client of the server's API."""
    with httpx.Client(base_url=str(server.base_url), timeout=10) as client:
        yield client


def browser_tab(chromium: Browser, base_url: str | None) -> Iterator[Page]:
    """A tab in a fresh browser context (no cookies) on ``base_url``; closed afterwards."""
    context = chromium.new_context(base_url=base_url, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(WAIT_MS)
    yield context.new_page()
    context.close()


def bearer(user: str, role: Role = Role.USER) -> dict[str, str]:
    """Authorization header of ``user``."""
    return {"Authorization": f"Bearer {token(user, role)}"}


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot of ``page`` as ``name``.png."""
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
