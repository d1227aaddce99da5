"""UI fixtures: Chromium driven by Playwright against a live stack (`python wsgi.py` + `python worker.py`)."""

import warnings

import pytest

from .browser import CHROMIUM, create_user, launch, sign_in


# Real browser against a live stack -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium():
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing, so the browser tests cannot run: install it with 'apt-get install -y chromium'"
        warnings.warn(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1100, "height": 800})
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def web(stack):
    """A live web process with one user; tests start a worker when they need answers."""
    create_user(stack)
    stack.start_web()
    return stack


@pytest.fixture
def signed_in_page(page, web):
    sign_in(page, web.url)
    return page
