"""Checked API keys are remembered for KEY_CACHE_SECONDS: a key revoked, or its user disabled, in this process is
refused at once; in another, at once when the change is announced and within the bound when it is not; and a
remembered key costs its requests no SELECT."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

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
    """The operator's `keys revoke` and `users disable` run in processes of their own. A client polls all along, so
    the web process checked the key again just before the change: it is still taken for a while, never longer than
    the bound (counted from the CLI's return, which is after its commit), and not again once refused. (The client
    stops at its first 401: wrong keys are rate limited per address.)"""
    stack.start_web()
    url = stack.url + "/api/models"
    for name, command in (("judy", ("keys", "revoke", "judy-key")), ("kim", ("users", "disable", "kim"))):
        headers = stack.user(name)
        assert requests.get(url, headers=headers, timeout=10).status_code == 200
        refused: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                status = requests.get(url, headers=headers, timeout=10).status_code
                if status != 200:
                    refused.append(time.monotonic())
                    assert status == 401
                    return

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            stack.cli(*command)
            done = time.monotonic()
            poller.join(timeout=KEY_CACHE_SECONDS + 5)
        finally:
            stop.set()
            poller.join()
        assert refused and refused[0] - done < KEY_CACHE_SECONDS + 1, f"{name}'s key still worked"
        assert requests.get(url, headers=headers, timeout=10).status_code == 401


def test_another_process_revoking_a_key_just_checked_is_followed_within_the_bound(stack):
    """The sharp edge of the bound: the web process looked the new key up (its first use) just before another
    process deleted it, so it is remembered for about the whole KEY_CACHE_SECONDS, and no longer."""
    stack.start_web()
    url = stack.url + "/api/models"
    headers = stack.user("lena")
    assert requests.get(url, headers=headers, timeout=10).status_code == 200
    stack.query("DELETE FROM api_keys WHERE name = 'lena-key'")
    changed = time.monotonic()
    while requests.get(url, headers=headers, timeout=10).status_code == 200:
        assert time.monotonic() - changed < KEY_CACHE_SECONDS + 1, "the revoked key still works"
        time.sleep(0.05)


def test_a_change_announced_by_another_process_is_refused_at_once_by_every_web_process(stack):
    """Both forked web processes have just checked the key (sixteen new connections, spread by the kernel); the
    CLI's revoke is heard by both before its process has even exited."""
    stack.env["WEB_PROCESSES"] = "2"
    stack.start_web()
    url = stack.url + "/api/models"
    headers = stack.user("mona")
    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(lambda _: requests.get(url, headers=headers, timeout=10).status_code, range(16))) == {200}
    stack.cli("keys", "revoke", "mona-key")
    with ThreadPoolExecutor(4) as pool:  # a few: wrong keys are rate limited per address
        assert set(pool.map(lambda _: requests.get(url, headers=headers, timeout=10).status_code, range(4))) == {401}
