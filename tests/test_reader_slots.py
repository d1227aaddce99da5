"""Reader slots counted per key and per user across web processes, against a real Redis: two `Slots` stand for two
web processes; a process's own cap still holds without Redis, and a dead process's slots free themselves."""

import time

from redis import Redis

from app import reader_slots
from app.reader_slots import SlotCaps, Slots

CAPS = SlotCaps(total=10, per_key=2, per_user=3)


def test_the_caps_per_key_and_per_user_hold_across_processes(redis_url):
    redis = Redis.from_url(redis_url)
    one, two = Slots(), Slots()
    first = one.take(redis, 7, 1, CAPS)
    assert first and two.take(redis, 7, 1, CAPS)
    assert two.take(redis, 7, 1, CAPS) is None and one.take(redis, 7, 1, CAPS) is None  # key 7: 2 in all
    assert two.take(redis, 8, 1, CAPS)  # the user's third, with another key
    assert one.take(redis, 9, 1, CAPS) is None  # the user: 3 in all
    assert one.take(redis, ("browser", 2), 2, CAPS)  # others are not held up
    first()
    assert two.take(redis, 7, 1, CAPS)  # given back: free again, in the other process too
    assert one.total == 1 and two.total == 3


def test_without_redis_a_process_still_counts_its_own():
    gone = Redis(unix_socket_path="/nonexistent/redis.sock")
    slots = Slots()
    taken = [slots.take(gone, 7, 1, CAPS) for _ in range(3)]
    assert taken[0] and taken[1] and taken[2] is None
    taken[0]()
    assert slots.take(gone, 7, 1, CAPS)


def test_the_slots_of_a_process_that_died_free_themselves(redis_url, monkeypatch):
    redis = Redis.from_url(redis_url)
    monkeypatch.setattr(reader_slots, "LEASE_SECONDS", 1)
    dead = Slots()
    monkeypatch.setattr(dead, "_hold", lambda *_: None)  # killed: nothing renews its leases
    assert dead.take(redis, 7, 1, CAPS) and dead.take(redis, 7, 1, CAPS)
    alive = Slots()
    assert alive.take(redis, 7, 1, CAPS) is None
    time.sleep(1.1)
    assert alive.take(redis, 7, 1, CAPS)


def test_held_slots_are_renewed(redis_url, monkeypatch):
    redis = Redis.from_url(redis_url)
    monkeypatch.setattr(reader_slots, "LEASE_SECONDS", 2)
    monkeypatch.setattr(reader_slots, "RENEW_SECONDS", 0.3)
    slots = Slots()
    assert slots.take(redis, 7, 1, CAPS) and slots.take(redis, 7, 1, CAPS)
    time.sleep(3)
    assert Slots().take(redis, 7, 1, CAPS) is None  # still held after the first lease ran out
