"""The keys page: a user's own keys (created with the key and secret shown once, revoked), their usage; an admin
sees everyone's keys and manages users."""

import re

from sqlalchemy import select

from app.extensions import db
from app.keys import create_key
from app.models import ApiKey, User
from tests.factories import add_user


def test_a_user_creates_sees_once_and_revokes_their_own_keys(signed_in, user):
    page = signed_in.post("/chat/keys", data={"key-name": "n8n", "csrf_token": signed_in.csrf_token("/chat/keys")}).text
    key = re.search(r'<code id="new-key">(llk_[^<]+)</code>', page).group(1)
    secret = re.search(r'<code id="new-secret">([0-9a-f]{64})</code>', page).group(1)
    row = db.session.scalar(select(ApiKey).where(ApiKey.name == "n8n"))
    assert (row.user_id, row.webhook_secret) == (user.id, secret)
    assert signed_in.get("/chat/api/models", headers={"X-API-Key": key}).status_code == 200
    listing = signed_in.get("/chat/keys").text
    assert key not in listing and secret not in listing and f"{key[:8]}…" in listing

    other = add_user("bob")
    create_key("bobs", other.id)
    assert "bobs" not in signed_in.get("/chat/keys").text
    bobs = db.session.scalar(select(ApiKey.id).where(ApiKey.name == "bobs"))
    token = signed_in.csrf_token("/chat/keys")
    assert signed_in.post(f"/chat/keys/{bobs}/revoke", data={"csrf_token": token}).status_code == 404
    assert signed_in.post(f"/chat/keys/{row.id}/revoke", data={"csrf_token": token}).status_code == 303
    assert signed_in.get("/chat/api/models", headers={"X-API-Key": key}).status_code == 401
    assert signed_in.post("/chat/users", data={"user-name": "x", "user-password": "a long password",
                                               "csrf_token": token}).status_code == 404  # not an admin


def test_an_admin_sees_every_key_and_manages_users(browser):
    add_user("root", password="a long password", is_admin=True)
    bob = add_user("bob")
    create_key("bobs", bob.id)
    browser.login("root", "a long password")
    page = browser.get("/chat/keys").text
    assert "bobs" in page and '<td class="owner">bob</td>' in page
    token = browser.csrf_token("/chat/keys")
    assert browser.post("/chat/users", data={"user-name": "carol", "user-password": "a long password", "user-is_admin": "y",
                                             "csrf_token": token}).status_code == 303
    assert db.session.scalar(select(User.is_admin).where(User.name == "carol")) is True
    assert browser.post(f"/chat/users/{bob.id}/disable", data={"csrf_token": token}).status_code == 303
    db.session.expire_all()
    assert db.session.get(User, bob.id).disabled


def test_a_name_in_use_is_refused_on_the_form(browser):
    add_user("root", password="a long password", is_admin=True)
    create_key("n8n", add_user("bob").id)  # key names are unique across users
    browser.login("root", "a long password")
    token = browser.csrf_token("/chat/keys")
    for form, what in (({"key-name": "n8n"}, "key"), ({"user-name": "bob", "user-password": "a long password"}, "user")):
        answer = browser.post("/chat/keys" if what == "key" else "/chat/users", data={**form, "csrf_token": token})
        assert answer.status_code == 422 and f"A {what} with this name exists already." in answer.text


def test_a_new_users_password_follows_the_rule_of_users_passwd(browser):
    """bcrypt reads 72 bytes: 40 accented letters are fewer characters but more bytes than that."""
    add_user("root", password="a long password", is_admin=True)
    browser.login("root", "a long password")
    token = browser.csrf_token("/chat/keys")
    for password, refusal in (("short", "have at least 8 characters"), ("é" * 40, "be at most 72 bytes")):
        answer = browser.post("/chat/users", data={"user-name": "carol", "user-password": password, "csrf_token": token})
        assert answer.status_code == 422 and f"The password must {refusal}" in answer.text
    assert db.session.scalar(select(User).where(User.name == "carol")) is None
