"""flask --app wsgi keys ... / users ..., through Flask's CLI runner."""

import re

import bcrypt
import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import ApiKey, User
from tests.factories import add_user


@pytest.fixture
def admin(app) -> User:
    return add_user("admin", is_admin=True)


def test_key_lifecycle(runner, client, admin):
    created = runner.invoke(args=["keys", "create", "n8n"])
    assert created.exit_code == 0
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("llk_")
    assert key not in db.session.scalar(select(ApiKey.key_hash))  # stored hashed
    assert client.get("/chat/api/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200

    listed = runner.invoke(args=["keys", "list"]).stdout
    assert "n8n" in listed and key not in listed

    assert runner.invoke(args=["keys", "create", "n8n"]).exit_code != 0  # names are unique
    assert runner.invoke(args=["keys", "revoke", "n8n"]).exit_code == 0
    assert client.get("/chat/api/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert runner.invoke(args=["keys", "revoke", "n8n"]).exit_code != 0


def test_only_interactive_keys_may_jump_the_queue(runner, client, admin):
    batch_key = runner.invoke(args=["keys", "create", "batch"]).stdout.strip().splitlines()[-1]
    answer = client.post("/chat/api/submit", json={"user_input": "hi", "priority": "interactive"},
                         headers={"X-API-Key": batch_key})
    assert answer.status_code == 403 and answer.json["error"]["code"] == "priority_not_allowed"
    fast_key = runner.invoke(args=["keys", "create", "fast", "--interactive"]).stdout.strip().splitlines()[-1]
    answer = client.post("/chat/api/submit", json={"user_input": "hi", "priority": "interactive"},
                         headers={"X-API-Key": fast_key})
    assert answer.status_code == 202 and answer.json["priority"] == "interactive"


def test_users_create_from_stdin(runner):
    assert runner.invoke(args=["users", "create", "alice", "--password-stdin"], input="correct horse\n").exit_code == 0
    user = db.session.scalar(select(User).where(User.name == "alice"))
    assert bcrypt.checkpw(b"correct horse", user.password_hash.encode())
    short = runner.invoke(args=["users", "create", "bob", "--password-stdin"], input="short\n")
    assert short.exit_code != 0 and "8 characters" in short.output
    long = runner.invoke(args=["users", "create", "bob", "--password-stdin"], input="x" * 73 + "\n")
    assert long.exit_code != 0 and "72 bytes" in long.output


def test_migrations_match_the_models(app):
    from flask_migrate import check

    check()  # raises if a model changed without a migration


def test_first_run_creates_admin_once_and_prints_its_password(runner, app):
    first = runner.invoke(args=["users", "ensure-admin"])
    password = re.search(r"^admin password: (\S+)$", first.stdout, re.M).group(1)
    admin = db.session.scalar(select(User).where(User.name == "admin"))
    assert len(password) >= 16 and password not in admin.password_hash
    assert bcrypt.checkpw(password.encode(), admin.password_hash.encode())
    assert runner.invoke(args=["users", "ensure-admin"]).stdout == ""  # a user exists: nothing to do


def test_no_generated_password_when_the_admin_password_hash_is_set(runner, app):
    app.settings.admin_password_hash = bcrypt.hashpw(b"original admin", bcrypt.gensalt(rounds=4)).decode()
    assert runner.invoke(args=["users", "ensure-admin"]).stdout == ""
    assert db.session.scalar(select(User)) is None


def test_passwd_changes_an_existing_users_password(runner):
    runner.invoke(args=["users", "create", "alice", "--password-stdin"], input="correct horse\n")
    assert runner.invoke(args=["users", "passwd", "alice", "--password-stdin"], input="battery staple\n").exit_code == 0
    db.session.expire_all()
    user = db.session.scalar(select(User).where(User.name == "alice"))
    assert bcrypt.checkpw(b"battery staple", user.password_hash.encode())
    missing = runner.invoke(args=["users", "passwd", "nobody", "--password-stdin"], input="battery staple\n")
    assert missing.exit_code != 0 and "no user named 'nobody'" in missing.output
