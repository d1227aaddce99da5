"""Login, logout, the login requirement on every page, throttling of failed logins, and CSRF."""

import bcrypt
import pytest
from sqlalchemy import func, select

from app import create_app, jobs
from app.extensions import db
from app.models import Conversation, Job, Message, User
from config import load_settings

from tests.client import Client
from tests.factories import MODEL, NAME, PASSWORD

PAGES = ["/chat/", "/chat/conversations", "/chat/conversations?q=x&page=2", "/chat/conversations/new",
         "/chat/conversations/c1", "/chat/conversations/c1/delete", "/chat/jobs", "/chat/jobs?status=done",
         "/chat/jobs/1", "/chat/jobs/1/answer"]
ACTIONS = ["/chat/conversations/c1/messages", "/chat/conversations/c1/rename", "/chat/conversations/c1/delete",
           "/chat/jobs/1/stop"]


@pytest.mark.parametrize("url", PAGES)
def test_every_page_sends_a_visitor_to_the_login_page_and_back(browser, user, url):
    answer = browser.get(url)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/chat/login?next=")
    signed_in = browser.post(answer.headers["Location"],
                             data={"name": NAME, "password": PASSWORD, "csrf_token": browser.csrf_token()})
    assert signed_in.headers["Location"] == url


@pytest.mark.parametrize("url", ACTIONS)
def test_every_action_needs_a_login(browser, url):
    answer = browser.post(url, data={"csrf_token": browser.csrf_token(), "prompt": "hi", "title": "x"})
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/chat/login")
    assert db.session.scalar(select(func.count()).select_from(Job)) == 0


def test_an_htmx_poll_without_a_session_reloads_the_page_into_the_login(browser):
    answer = browser.get("/chat/jobs/1/answer", headers={"HX-Request": "true",
                                                        "HX-Current-URL": "http://localhost/chat/conversations/c1"})
    assert answer.status_code == 401 and answer.text == ""
    assert answer.headers["HX-Redirect"] == "/chat/login?next=/chat/conversations/c1"


def test_login_then_logout(browser, user):
    assert browser.login().headers["Location"] == "/chat/conversations"
    assert browser.get("/chat/conversations").status_code == 200
    assert browser.get("/chat/").headers["Location"] == "/chat/conversations"
    assert browser.get("/chat/login").headers["Location"] == "/chat/conversations"  # already signed in

    answer = browser.post("/chat/logout", data={"csrf_token": browser.csrf_token("/chat/conversations")},
                          follow_redirects=True)
    assert "You are signed out." in answer.text
    assert browser.get("/chat/conversations").status_code == 302


@pytest.mark.parametrize("name, password", [(NAME, "wrong password"), ("mallory", PASSWORD), (NAME, "x" * 100)])
def test_a_wrong_name_or_password_is_refused(browser, user, name, password):
    answer = browser.login(name, password)
    assert answer.status_code == 200 and "Wrong name or password." in answer.text
    assert browser.get("/chat/conversations").status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"])
def test_login_never_redirects_off_site(browser, user, target):
    answer = browser.post("/chat/login", query_string={"next": target},
                          data={"name": NAME, "password": PASSWORD, "csrf_token": browser.csrf_token()})
    assert answer.headers["Location"] == "/chat/conversations"


def test_the_admin_password_hash_from_the_environment_signs_in_admin(browser, app):
    app.settings.admin_password_hash = bcrypt.hashpw(b"original admin", bcrypt.gensalt(rounds=4)).decode()
    assert browser.login("admin", "wrong").status_code == 200
    assert db.session.scalar(select(User).where(User.name == "admin")) is None

    assert browser.login("admin", "original admin").headers["Location"] == "/chat/conversations"
    admin = db.session.scalar(select(User).where(User.name == "admin"))
    assert admin.password_hash == app.settings.admin_password_hash


def test_sign_in_attempts_are_limited_per_name(browser, user, app):
    settings = app.settings
    settings.login_attempts = 3
    for _ in range(3):
        assert "Wrong name or password." in browser.login(password="guess").text

    blocked = browser.login()  # even the right password, until the window has passed
    assert blocked.status_code == 429
    assert "Too many sign-in attempts" in blocked.text
    assert 0 < int(blocked.headers["Retry-After"]) <= settings.login_window
    assert browser.get("/chat/conversations").status_code == 302
    assert browser.login(environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 429  # from anywhere

    other = browser.login("bob", "guess")  # another name is counted on its own
    assert other.status_code == 200


def test_sign_in_attempts_are_limited_per_address(browser, user, app):
    app.settings.login_attempts_per_address = 4
    for name in ("bob", "carol", "dave", "erin"):
        assert browser.login(name, "guess").status_code == 200
    assert browser.login().status_code == 429  # the right password, but this address has used its attempts
    assert browser.login(environ_base={"REMOTE_ADDR": "10.0.0.9"}).headers["Location"] == "/chat/conversations"


def test_a_successful_login_forgets_earlier_failures(browser, user, app):
    app.settings.login_attempts = 2
    browser.login(password="guess")
    browser.login()
    browser.post("/chat/logout", data={"csrf_token": browser.csrf_token("/chat/conversations")})
    browser.login(password="guess")
    assert browser.login().headers["Location"] == "/chat/conversations"


def test_the_attempt_counts_live_in_redis_with_an_expiry(browser, user, app):
    browser.login(password="guess")
    redis = app.redis
    [key] = redis.keys("*login-name*")
    assert redis.get(key) == b"1" and 0 < redis.ttl(key) <= app.settings.login_window
    assert len(redis.keys("*login-address*")) == 1


@pytest.fixture
def conversation(signed_in, user):
    """A conversation with one turn, written by jobs.submit as the send form does."""
    jobs.submit(user.id, "c1", "First prompt", MODEL, None, {}, conversation_id="c1")
    return db.session.get(Conversation, "c1")


def counts() -> tuple[int, int, int]:
    db.session.expire_all()
    return tuple(db.session.scalar(select(func.count()).select_from(table)) for table in (Conversation, Job, Message))


@pytest.mark.parametrize("url, data", [
    ("/chat/conversations/c1/messages", {"prompt": "Second prompt", "model": MODEL}),
    ("/chat/conversations/new-one/messages", {"prompt": "A new conversation", "model": MODEL}),
    ("/chat/conversations/c1/rename", {"title": "Renamed"}),
    ("/chat/conversations/c1/delete", {}),
    ("/chat/jobs/1/stop", {}),
    ("/chat/logout", {}),
])
@pytest.mark.parametrize("token", [None, "forged-token"])
def test_a_post_without_a_valid_csrf_token_is_refused_and_changes_nothing(app, signed_in, conversation, url, data, token):
    assert app.config["WTF_CSRF_ENABLED"] is not False  # TESTING does not turn CSRF off
    before = counts()
    headers = {"X-CSRFToken": token} if token else {}
    answer = signed_in.post(url, data=data, headers=headers)
    assert answer.status_code == 400 and "CSRF" in answer.text
    assert counts() == before
    assert conversation.title == "First prompt"
    assert db.session.get(Job, 1).status == "queued"
    assert signed_in.get("/chat/conversations").status_code == 200  # still signed in


def test_htmx_sends_the_token_as_a_header(signed_in, conversation):
    answer = signed_in.htmx("POST", "/chat/conversations/c1/rename", data={"title": "Renamed"})
    assert answer.status_code == 200
    db.session.expire_all()
    assert conversation.title == "Renamed"


def test_every_page_puts_the_token_where_htmx_sends_it(signed_in):
    page = signed_in.get("/chat/conversations").text
    token = signed_in.csrf_token("/chat/conversations")
    assert f"""hx-headers='{{"X-CSRFToken": "{token}"}}'""" in page


def test_an_error_page_outside_the_app_leaves_the_session_cookie_alone(browser):
    """Browsers ask for /favicon.ico, outside BASE_PATH where the session cookie is not sent; a new session
    set there (with the cookie's path) would replace the visitor's and break their CSRF token."""
    answer = browser.get("/favicon.ico")
    assert answer.status_code == 404 and "Set-Cookie" not in answer.headers


@pytest.mark.parametrize("setting, base_path", [("/", ""), ("/llm/", "/llm")])
def test_the_ui_lives_under_base_path(environ, app, setting, base_path):
    site = create_app(load_settings({**environ, "BASE_PATH": setting}))
    site.test_client_class = Client
    client = site.test_client()
    assert client.get(f"{base_path}/conversations").headers["Location"] == f"{base_path}/login?next={base_path}/conversations"
    page = client.get(f"{base_path}/login").text
    assert f'href="{base_path}/static/css/app.css"' in page and f'action="{base_path}/login"' in page
    assert client.get(f"{base_path}/static/js/app.js").status_code == 200
    with site.app_context():
        db.engine.dispose()
