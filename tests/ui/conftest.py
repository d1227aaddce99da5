"""UI fixtures: a test client that behaves like a browser session (cookies, CSRF token from the page), and
Chromium driven by Playwright against a live stack (`python wsgi.py` + `python worker.py`)."""

import re
import warnings

import bcrypt
import pytest
from flask.testing import FlaskClient

from app import create_app
from app.extensions import db
from app.models import User

from .browser import CHROMIUM, NAME, PASSWORD, create_user, launch, sign_in

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


# Test client ---------------------------------------------------------------------------------------


class SiteClient(FlaskClient):
    """Requests as a browser sends them: CSRF tokens from the pages, htmx headers."""

    def csrf_token(self, page: str = "/chat/login") -> str:
        return TOKEN.search(self.get(page, follow_redirects=True).text).group(1)

    def login(self, name: str = NAME, password: str = PASSWORD, **kwargs):
        return self.post("/chat/login", data={"name": name, "password": password, "csrf_token": self.csrf_token()},
                         **kwargs)

    def htmx(self, method: str, url: str, **kwargs):
        """A request as htmx sends it: HX-Request, and the CSRF token as a header (from the page's body)."""
        headers = {"HX-Request": "true", "X-CSRFToken": self.csrf_token("/chat/conversations"),
                   **kwargs.pop("headers", {})}
        return self.open(url, method=method, headers=headers, **kwargs)


@pytest.fixture
def site(app):
    """A second app object on the test's database and Redis, serving the test client.

    The `app` fixture keeps an app context open for the whole test, and requests to that same app object
    reuse it, so `g` would leak between requests (Flask-Login's cached user, Flask-WTF's token). Requests
    to this app get a fresh context each, as they do in production; the test body keeps `app`'s context
    for setting up rows and checking them."""
    site = create_app(app.config["SETTINGS"])
    site.config.update(TESTING=True)
    site.test_client_class = SiteClient
    yield site
    with site.app_context():
        db.engine.dispose()


@pytest.fixture
def user(app) -> User:
    # Few bcrypt rounds: the cost is stored in the hash, so logging in stays fast in tests.
    user = User(name=NAME, password_hash=bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode())
    db.session.add(user)
    db.session.commit()
    return user


@pytest.fixture
def browser(site) -> SiteClient:
    """A visitor who has not signed in."""
    return site.test_client()


@pytest.fixture
def signed_in(browser, user) -> SiteClient:
    assert browser.login().status_code == 302
    return browser


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
