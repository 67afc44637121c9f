"""Debian's Chromium, driven headless by Playwright (executable_path: no browser is downloaded), and a service.

`make test` installs Chromium (scripts/ensure-chromium.sh) as it installs Redis. With
FHIR_PATCH_SCREENSHOTS=<dir> the tests also keep a screenshot of each page there (docs/screenshots/ is made so).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from devkit.browser import CHROMIUM_FLAGS, chromium_path
from tests.support.service import Service, service_of_its_own

OPERATOR_SCOPE = "system/*.cruds system/metrics.read"


def chromium() -> str:
    found = chromium_path()
    if not found:
        pytest.fail("Chromium is not installed: `make test` installs it (scripts/ensure-chromium.sh)")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    opened.set_default_timeout(30_000)  # a wait for what the page shows; the page polls every second
    yield opened
    context.close()


@pytest.fixture(scope="module")
def ui_service(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with service_of_its_own(service_env, tmp_path_factory.mktemp("ui"), {}, workers=1) as running:
        yield running


def screenshot(page: Page, name: str) -> None:
    """Keep the page's picture under FHIR_PATCH_SCREENSHOTS, when it is set."""
    where = os.environ.get("FHIR_PATCH_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"{name}.png"))


def sign_in(page: Page, service: Service, token: str) -> None:
    """Paste the token into the page, as a person would (it goes to sessionStorage only)."""
    page.goto(f"{service.base}/ui/")
    page.fill("#token", token)
    page.click("#access button[type=submit]")
    page.wait_for_selector("#groups")
