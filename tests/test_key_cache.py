"""Checked API keys are remembered for KEY_CACHE_SECONDS: a key revoked, or its user disabled, in this process is
refused at once; in another process, within the bound; and a remembered key costs its requests no SELECT."""

import time

import requests
from sqlalchemy import delete, select, update

from app.extensions import db
from app.key_cache import KEY_CACHE_SECONDS
from app.keys import create_key
from app.models import ApiKey, User
from tests.factories import add_user, recorded_statements

MODELS = "/chat/api/models"


def key_lookups(statements: list[str]) -> int:
    return sum("FROM api_keys" in statement for statement in statements)


def test_a_remembered_key_is_not_looked_up_again_until_its_time_is_up(app, client, api_headers):
    app.key_cache.seconds = 0.5
    assert client.get(MODELS, headers=api_headers).status_code == 200
    with recorded_statements() as statements:
        assert client.get(MODELS, headers=api_headers).status_code == 200
    assert key_lookups(statements) == 0
    time.sleep(0.5)
    with recorded_statements() as statements:
        assert client.get(MODELS, headers=api_headers).status_code == 200
    assert key_lookups(statements) == 1


def test_a_key_changed_elsewhere_is_refused_within_the_bound(app, client, api_headers):
    """Another process's revoke is a change this process's sessions never see: here, a Core DELETE on a connection
    of its own, which no ORM event hears."""
    app.key_cache.seconds = 0.5
    assert client.get(MODELS, headers=api_headers).status_code == 200
    with db.engine.begin() as elsewhere:
        elsewhere.execute(delete(ApiKey))
    assert client.get(MODELS, headers=api_headers).status_code == 200  # remembered
    time.sleep(0.5)
    assert client.get(MODELS, headers=api_headers).status_code == 401


def test_a_key_revoked_or_a_user_disabled_in_this_process_is_refused_at_once(client, api_headers, owner):
    other = add_user("other")
    other_headers = {"X-API-Key": create_key("other", other.id)}
    for headers in (api_headers, other_headers):
        assert client.get(MODELS, headers=headers).status_code == 200
    db.session.delete(db.session.scalar(select(ApiKey).where(ApiKey.user_id == owner.id)))
    db.session.commit()
    assert client.get(MODELS, headers=api_headers).status_code == 401
    assert client.get(MODELS, headers=other_headers).status_code == 200
    db.session.get(User, other.id).disabled = True
    db.session.commit()
    assert client.get(MODELS, headers=other_headers).status_code == 401


def test_a_rolled_back_change_forgets_nothing(app, client, api_headers, owner):
    assert client.get(MODELS, headers=api_headers).status_code == 200
    db.session.get(User, owner.id).disabled = True
    db.session.flush()
    db.session.rollback()
    with recorded_statements() as statements:
        assert client.get(MODELS, headers=api_headers).status_code == 200
    assert key_lookups(statements) == 0


def test_a_key_records_its_last_use_about_once_a_minute(client, api_headers):
    assert db.session.scalar(select(ApiKey.last_used_at)) is None
    assert client.get(MODELS, headers=api_headers).status_code == 200
    used = db.session.scalar(select(ApiKey.last_used_at))
    assert used is not None
    db.session.execute(update(ApiKey).values(last_used_at=None))  # as if another process had never seen it
    db.session.commit()
    assert client.get(MODELS, headers=api_headers).status_code == 200
    assert db.session.scalar(select(ApiKey.last_used_at)) is None  # the remembered use is recent enough


def test_revoking_or_disabling_with_the_cli_reaches_the_web_process_within_the_bound(stack):
    """The operator's `keys revoke` and `users disable` run in processes of their own."""
    stack.start_web()
    for name, command in (("judy", ("keys", "revoke", "judy-key")), ("kim", ("users", "disable", "kim"))):
        headers = stack.user(name)
        assert requests.get(stack.url + "/api/models", headers=headers, timeout=10).status_code == 200
        stack.cli(*command)
        done = time.monotonic()
        while requests.get(stack.url + "/api/models", headers=headers, timeout=10).status_code == 200:
            assert time.monotonic() - done < KEY_CACHE_SECONDS + 1, f"{name}'s key still works"
            time.sleep(0.05)
