"""Pytest fixtures for browser tests: pytest-playwright driving Debian's Chromium.

Registered for the whole suite in the root conftest.py, so any app's browser test just uses
pytest-playwright's `page` together with pytest-django's `live_server`::

    @pytest.mark.acceptance
    @pytest.mark.django_db(transaction=True)
    def test_something(page, live_server):
        login(page, live_server.url, "alice", "secret")
        ...

Playwright's own browser downloads (`playwright install`) are never used: the fixtures launch
the system Chromium. Without it the tests are skipped locally and fail when `CI=true`.
"""

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from playwright.sync_api import Browser, BrowserType, Page, Playwright, sync_playwright

CHROMIUM_PATH = Path(os.environ.get("ADIT_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ASYNC_UNSAFE_VARIABLE = "DJANGO_ALLOW_ASYNC_UNSAFE"
# Generous for a loaded 2-core CI machine; a real failure still shows within seconds.
DEFAULT_TIMEOUT_MS = 15_000


def require_chromium() -> Path:
    """The Chromium executable; skips the test when it is missing (fails under CI=true)."""
    if CHROMIUM_PATH.is_file() and os.access(CHROMIUM_PATH, os.X_OK):
        return CHROMIUM_PATH
    found = shutil.which("chromium")
    reason = (
        f"Chromium is needed for browser tests but {CHROMIUM_PATH} does not exist"
        + (f" (found {found}; set ADIT_TEST_CHROMIUM to use it)" if found else "")
        + ". Install it with `apt-get install chromium`."
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's launch options, pointed at the system Chromium."""
    executable = require_chromium()
    return {
        **browser_type_launch_args,
        "executable_path": str(executable),
        "args": CHROMIUM_ARGS,
    }


# pytest-playwright keeps one Playwright (and browser) for the whole session. Playwright's sync
# API leaves its asyncio loop marked as running in the main thread while it is started, which
# breaks every later test that calls asyncio.run() (pytest-asyncio) or the Django ORM. So the
# fixtures below replace the session-scoped ones with per-test ones: each browser test starts
# and stops its own Playwright and Chromium (about a second), and other tests are unaffected.


@pytest.fixture
def playwright() -> Iterator[Playwright]:
    # While the loop runs, the test's own ORM calls (set-up, checks) would be refused as
    # "async unsafe"; they do not run inside the loop, so allowing them is safe here. They use
    # a connection of their own (not the test's transaction), hence browser tests need
    # `@pytest.mark.django_db(transaction=True)` anyway, as `live_server` does.
    previous = os.environ.get(ASYNC_UNSAFE_VARIABLE)
    os.environ[ASYNC_UNSAFE_VARIABLE] = "true"
    driver = sync_playwright().start()
    try:
        yield driver
    finally:
        # While the loop runs, Django keeps this thread's connections in separate (async)
        # storage; close them now, or they stay open (and block dropping the test database).
        connections.close_all()
        driver.stop()
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE_VARIABLE, None)
        else:
            os.environ[ASYNC_UNSAFE_VARIABLE] = previous


@pytest.fixture
def browser_type(playwright: Playwright, browser_name: str) -> BrowserType:
    return getattr(playwright, browser_name)


@pytest.fixture
def launch_browser(
    browser_type_launch_args: dict[str, Any], browser_type: BrowserType
) -> Callable[..., Browser]:
    def launch(**kwargs: Any) -> Browser:
        return browser_type.launch(**{**browser_type_launch_args, **kwargs})

    return launch


@pytest.fixture
def browser(launch_browser: Callable[..., Browser]) -> Iterator[Browser]:
    chromium = launch_browser()
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def browser_context_args() -> dict[str, Any]:
    # ADIT_BROWSER_WIDTH=390 runs the browser tests at phone width (for screenshot reviews).
    width = int(os.environ.get("ADIT_BROWSER_WIDTH", "1280"))
    return {"viewport": {"width": width, "height": 800}}


@pytest.fixture
def page(page: Page) -> Page:
    """pytest-playwright's page, with timeouts that fit a busy test machine."""
    page.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page.set_default_navigation_timeout(DEFAULT_TIMEOUT_MS)
    return page


def login(page: Page, base_url: str, username: str, password: str) -> None:
    """Log in through ADIT's login page and wait until the home page is shown."""
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}/")
