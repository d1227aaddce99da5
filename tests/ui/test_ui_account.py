"""The account page: name and role, a new password (the current one first, the rule of `users passwd`; the other
sessions end, this one stays), the user's own keys in a few numbers, and signing out everywhere."""

import logging
import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from app.extensions import db
from app.keys import create_key
from app.models import ApiKey, JobStatus, utcnow
from tests.client import Client
from tests.factories import NAME, PASSWORD, add_turn, add_user

from .browser import sign_in

NEW = "a brand new passphrase"


def change(client: Client, current: str = PASSWORD, new: str = NEW, confirm: str | None = None):
    return client.post("/chat/account/password", data={
        "current_password": current, "password": new, "confirm": new if confirm is None else confirm,
        "csrf_token": client.csrf_token("/chat/account")})


@pytest.fixture
def second(app, user) -> Client:
    """The same user signed in from another browser."""
    other = app.test_client()
    assert other.login().status_code == 302
    return other


def signed_in_now(client: Client) -> bool:
    return client.get("/chat/account").status_code == 200


def test_the_page_needs_a_login(browser, user):
    answer = browser.get("/chat/account")
    assert answer.status_code == 302 and answer.headers["Location"] == "/chat/login?next=/chat/account"
    assert change(browser).status_code == 302
    assert browser.login(password=NEW).status_code == 200  # nothing changed


def test_the_page_shows_the_user_their_keys_and_the_forms(signed_in, user):
    mine = create_key("mine", user.id)
    create_key("bobs", add_user("bob", is_admin=True).id)
    db.session.execute(update(ApiKey).where(ApiKey.name == "bobs").values(last_used_at=utcnow()))
    key_id = db.session.scalar(db.select(ApiKey.id).where(ApiKey.name == "mine"))
    add_turn("c1", "hi", JobStatus.DONE, "hello", api_key_id=key_id, processed_at=utcnow(), prompt_tokens=12,
             completion_tokens=5)
    add_turn("c2", "long ago", JobStatus.DONE, "old", api_key_id=key_id, processed_at=utcnow().replace(year=2020),
             prompt_tokens=100, completion_tokens=100)
    page = signed_in.get("/chat/account").text
    assert f"<dd>{NAME}</dd>" in page and "<dd>user</dd>" in page
    assert "<dt>Keys</dt><dd>1</dd>" in page and "<dd>—</dd>" in page  # bob's key, used, is not counted
    assert "1 job, 12 prompt and 5 completion tokens" in page
    assert 'href="/chat/keys"' in page and 'action="/chat/account/password"' in page
    assert re.search(r'href="/chat/account"\s+aria-current="page">Account</a>', page)
    assert mine not in page


@pytest.mark.parametrize("current, new, confirm, refusal", [
    ("wrong password", NEW, None, "That is not your current password."),
    (PASSWORD, "short", None, "The password must have at least 8 characters."),
    (PASSWORD, "é" * 40, None, "The password must be at most 72 bytes (bcrypt ignores the rest)."),
    (PASSWORD, NEW, "a different one", "The two new passwords differ."),
    ("", NEW, None, "Type your current password."),
])
def test_a_refused_change_says_why_and_changes_nothing(app, signed_in, second, caplog, current, new, confirm,
                                                       refusal):
    caplog.set_level(logging.DEBUG)
    answer = change(signed_in, current, new, confirm)
    assert answer.status_code == 422 and refusal in answer.text
    assert new not in answer.text and (not current or current not in answer.text)  # never sent back
    assert new not in caplog.text and (not current or current not in caplog.text)  # nor logged
    assert signed_in_now(signed_in) and signed_in_now(second)
    assert app.test_client().login(password=PASSWORD).status_code == 302


def test_a_change_keeps_this_session_and_ends_the_others(app, signed_in, second):
    answer = change(signed_in)
    assert answer.status_code == 303 and answer.headers["Location"] == "/chat/account"
    assert "Your password is changed." in signed_in.get("/chat/account").text
    assert signed_in_now(signed_in)
    assert second.get("/chat/account").status_code == 302  # signed out
    third = app.test_client()
    assert "Wrong name or password." in third.login(password=PASSWORD).text
    assert third.login(password=NEW).status_code == 302


def test_sign_out_everywhere_ends_every_session(signed_in, second):
    page = signed_in.get("/chat/account").text
    assert 'action="/chat/logout"' in page and "Sign out everywhere" in page
    answer = signed_in.post("/chat/logout", data={"csrf_token": signed_in.csrf_token("/chat/account")})
    assert answer.status_code == 302 and answer.headers["Location"] == "/chat/login"
    assert not signed_in_now(signed_in) and not signed_in_now(second)


def test_current_password_guesses_count_as_sign_in_attempts(app, signed_in, second):
    app.settings.login_attempts = 3
    assert "Wrong name or password." in app.test_client().login(password="guess").text  # one at the login page
    for _ in range(2):
        assert change(signed_in, current="guess").status_code == 422
    blocked = change(signed_in)  # even the right password, until the window has passed
    assert blocked.status_code == 429 and "Too many password attempts" in blocked.text
    assert 0 < int(blocked.headers["Retry-After"]) <= app.settings.login_window
    assert signed_in_now(signed_in) and signed_in_now(second)  # the sessions stay
    assert app.test_client().login().status_code == 429  # and signing in is blocked alike


def test_the_right_current_password_clears_the_count(app, signed_in):
    app.settings.login_attempts = 2
    change(signed_in, current="guess")
    assert change(signed_in).status_code == 303
    assert change(signed_in, current=NEW, new=PASSWORD).status_code == 303


def test_a_new_password_in_chromium_ends_the_other_browsers_session(chromium, signed_in_page, web):
    """Through the real stack: the form changes the password; another browser's session ends; the old password no
    longer signs in, the new one does."""
    elsewhere = chromium.new_context().new_page()
    sign_in(elsewhere, web.url)
    page = signed_in_page
    page.get_by_role("link", name="Account").click()
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill(NEW)
    page.get_by_label("New password again").fill(NEW)
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_text("Your password is changed.")).to_be_visible()
    elsewhere.goto(web.url + "/account")
    expect(elsewhere).to_have_url(re.compile(r"/login\?next="))
    elsewhere.get_by_label("Name").fill(NAME)
    elsewhere.get_by_label("Password").fill(PASSWORD)
    elsewhere.get_by_role("button", name="Sign in").click()
    expect(elsewhere.get_by_text("Wrong name or password.")).to_be_visible()
    sign_in(elsewhere, web.url, password=NEW)
    elsewhere.context.close()
