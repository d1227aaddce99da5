"""Safe defaults: headers on every answer, cookies that follow HTTPS, private instance files, disabled users,
per-key limits, and the migration that gives existing rows an owner."""

import stat

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app import create_app
from app.keys import create_key
from app.extensions import db
from app.models import ApiKey, Conversation, Job, User
from app.security import CONTENT_SECURITY_POLICY
from config import ConfigError, load_settings


@pytest.mark.parametrize("path", ["/chat/login", "/chat/conversations", "/chat/healthz", "/chat/api/models",
                                  "/chat/static/js/app.js", "/nowhere"])
def test_every_answer_carries_the_security_headers(signed_in, path):
    headers = signed_in.get(path).headers
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY and "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert (headers["X-Frame-Options"], headers["X-Content-Type-Options"], headers["Referrer-Policy"]) == (
        "DENY", "nosniff", "same-origin")


def test_session_cookies_are_secure_when_the_request_came_over_https(client):
    """Behind a proxy, waitress takes the scheme from X-Forwarded-Proto (tests/test_proxy.py)."""
    plain = client.get("/chat/login").headers["Set-Cookie"]
    over_https = client.get("/chat/login", base_url="https://localhost").headers["Set-Cookie"]
    assert "Secure" not in plain and "Secure" in over_https


@pytest.mark.sqlite
def test_the_instance_folder_and_database_are_private(app, settings):
    folder = settings.instance_path
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "llamalith.db").stat().st_mode) == 0o600


def test_a_disabled_user_can_neither_sign_in_nor_use_their_keys(runner, browser, user):
    key = create_key("alice-key", user.id)
    assert browser.get("/chat/api/models", headers={"X-API-Key": key}).status_code == 200
    assert browser.login().status_code == 302
    assert runner.invoke(args=["users", "disable", user.name]).exit_code == 0
    assert browser.get("/chat/conversations").status_code == 302  # the open session ended
    assert "Wrong name or password." in browser.login().text
    assert browser.get("/chat/api/models", headers={"X-API-Key": key}).status_code == 401


def test_a_keys_own_rate_limit_wins_over_the_default(runner, client, user):
    created = runner.invoke(args=["keys", "create", "slow", "--user", user.name, "--rate-limit", "2/minute"])
    key = created.stdout.strip().splitlines()[-1]
    statuses = [client.get("/chat/api/models", headers={"X-API-Key": key}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert runner.invoke(args=["keys", "create", "bad", "--rate-limit", "lots"]).exit_code != 0


def test_failed_authentications_from_one_address_are_limited(client, app):
    app.settings.api_auth_failures = 3
    statuses = [client.get("/chat/api/models", headers={"X-API-Key": f"guess-{n}"}).status_code for n in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_the_migration_gives_existing_keys_and_conversations_to_the_first_admin(app):
    """A database from before owners existed: an API key and its conversation, and no user at all."""
    downgrade(revision="e80b0d9c874b")
    connection = db.session.connection()
    connection.execute(sa.text("INSERT INTO api_keys (name, key_hash, prefix, interactive, created_at) "
                               "VALUES ('old', 'x', 'llk_', false, '2026-01-01')"))
    connection.execute(sa.text("INSERT INTO conversations (id, title, created_at, updated_at) "
                               "VALUES ('story-123', 'Old', '2026-01-01', '2026-01-01')"))
    connection.execute(sa.text("INSERT INTO jobs (conversation_id, user_input, model, params, priority, status, "
                               "attempts, created_at) VALUES ('story-123', 'hi', 'm', '{}', 'batch', 'done', 1, "
                               "'2026-01-01')"))
    db.session.commit()
    upgrade()
    admin = db.session.scalar(sa.select(User))
    assert (admin.name, admin.is_admin) == ("admin", True)
    assert db.session.scalar(sa.select(ApiKey.user_id)) == admin.id
    conversation = db.session.get(Conversation, "story-123")
    assert (conversation.user_id, conversation.session_id) == (admin.id, "story-123")
    assert db.session.scalar(sa.select(Job.user_id)) == admin.id


def test_cors_lets_in_only_the_configured_origins(environ, owner):
    from app.keys import create_key

    app = create_app(load_settings({**environ, "CORS_ORIGINS": "https://tools.example.com"}))
    client = app.test_client()
    with app.app_context():
        key = create_key("browser", owner.id)
    preflight = client.options("/chat/api/submit", headers={
        "Origin": "https://tools.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == "https://tools.example.com"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    real = client.get("/chat/v1/models", headers={"Origin": "https://tools.example.com", "Authorization": f"Bearer {key}"})
    assert real.status_code == 200 and real.headers["Access-Control-Allow-Origin"] == "https://tools.example.com"
    for origin in ("https://evil.example.com", "null"):
        other = client.options("/chat/api/submit", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert "Access-Control-Allow-Origin" not in other.headers
        assert "Access-Control-Allow-Origin" not in client.get("/chat/api/models", headers={
            "Origin": origin, "Authorization": f"Bearer {key}"}).headers
    assert "Access-Control-Allow-Origin" not in client.get("/chat/login", headers={
        "Origin": "https://tools.example.com"}).headers  # pages are not shared
    with app.app_context():
        db.engine.dispose()


def test_cors_is_off_by_default_and_wildcards_are_refused(client, environ):
    assert "Access-Control-Allow-Origin" not in client.options("/chat/api/submit", headers={
        "Origin": "https://tools.example.com", "Access-Control-Request-Method": "POST"}).headers
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        load_settings({**environ, "CORS_ORIGINS": "*"})
