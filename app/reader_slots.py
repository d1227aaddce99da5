"""Reader slots: each request that waits on a job (an event stream, a call waiting for its answer) holds a web
thread, so they are capped: in all per web process (its own threads), and per key and per user across every web
process of the server (counted in Redis, so `WEB_PROCESSES=N` does not let N times as many in).

A slot in Redis is a member of one sorted set per key and one per user, scored by when its lease ends. The process
holding it renews its leases every RENEW_SECONDS, so the slots of a process that died (kill -9) free themselves
within LEASE_SECONDS. With Redis unreachable, the process's own counts still apply (its readers wait for Redis
anyway, and refusing everyone while it restarts would be worse)."""

import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from redis import Redis, RedisError

log = logging.getLogger(__name__)

LEASE_SECONDS = 30
RENEW_SECONDS = 10
PREFIX = "llamalith:readers:"
# KEYS: the key's and the user's slot sets; ARGV: member, per-key cap, per-user cap, lease (s). 1 if taken.
_TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1e6
for i, caps in ipairs({ARGV[2], ARGV[3]}) do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(caps) then return 0 end
end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now + tonumber(ARGV[4]), ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[4])
end
return 1
"""
# KEYS: slot sets, each with its member at the same place in ARGV after the lease (s): leases held, extended.
_RENEW = """
local now = redis.call('TIME')
local deadline = tonumber(now[1]) + tonumber(now[2]) / 1e6 + tonumber(ARGV[1])
for i, set in ipairs(KEYS) do
  redis.call('ZADD', set, 'XX', deadline, ARGV[i + 1])
  redis.call('EXPIRE', set, ARGV[1])
end
"""


@dataclass
class SlotCaps:
    """How many readers may wait: per web process in all, and per key and per user on the whole server."""

    total: int
    per_key: int
    per_user: int


class Slots:
    """The reader slots this web process holds: counted here (the process's own cap, and the fallback without
    Redis), and per key and per user in Redis."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0
        self.per_key: Counter[Hashable] = Counter()
        self.per_user: Counter[int] = Counter()
        self.leases: dict[str, tuple[str, str]] = {}  # member -> its two slot sets in Redis
        self.renewing_in: int | None = None  # the pid whose thread renews the leases (a fork starts its own)

    def take(self, redis: Redis, key_id: Hashable, user_id: int, caps: SlotCaps) -> Callable[[], None] | None:
        """A slot for `key_id` (an API key's id, or a user's pages: app/keys.py) of `user_id`, as the call that
        gives it back; None when a cap is reached."""
        with self.lock:
            if (self.total >= caps.total or self.per_key[key_id] >= caps.per_key
                    or self.per_user[user_id] >= caps.per_user):
                return None
            self._count(key_id, user_id, 1)
        sets = (f"{PREFIX}key:{_name(key_id)}", f"{PREFIX}user:{user_id}")
        member = uuid.uuid4().hex
        try:
            taken = redis.eval(_TAKE, 2, *sets, member, caps.per_key, caps.per_user, LEASE_SECONDS)
        except RedisError as exc:
            log.warning("reader slots counted in this process only: Redis is unreachable (%s)", exc)
            return lambda: self._give_back(key_id, user_id)
        if not taken:
            self._give_back(key_id, user_id)
            return None
        self._hold(redis, member, sets)
        return lambda: self._give_back(key_id, user_id, redis, member)

    def _hold(self, redis: Redis, member: str, sets: tuple[str, str]) -> None:
        with self.lock:
            self.leases[member] = sets
            if self.renewing_in != os.getpid():
                self.renewing_in = os.getpid()
                threading.Thread(target=self._renew, args=(redis,), name="reader-slot-leases", daemon=True).start()

    def _renew(self, redis: Redis) -> None:
        while True:
            time.sleep(RENEW_SECONDS)
            with self.lock:
                held = [(slot_set, member) for member, sets in self.leases.items() for slot_set in sets]
            if not held:
                continue
            try:
                redis.eval(_RENEW, len(held), *(s for s, _ in held), LEASE_SECONDS, *(m for _, m in held))
            except RedisError as exc:
                log.warning("reader slot leases not renewed: Redis is unreachable (%s)", exc)

    def _give_back(self, key_id: Hashable, user_id: int, redis: Redis | None = None, member: str = "") -> None:
        with self.lock:
            self._count(key_id, user_id, -1)
            sets = self.leases.pop(member, ())
        if redis is None or not sets:
            return
        try:
            pipe = redis.pipeline(transaction=False)
            for slot_set in sets:
                pipe.zrem(slot_set, member)
            pipe.execute()
        except RedisError:
            pass  # its lease runs out instead

    def _count(self, key_id: Hashable, user_id: int, step: int) -> None:
        self.total += step
        self.per_key[key_id] += step
        self.per_user[user_id] += step


def _name(key_id: Hashable) -> str:
    """An API key's id, or ("browser", user id) for a user's pages: "browser-<id>"."""
    return "-".join(map(str, key_id)) if isinstance(key_id, tuple) else str(key_id)
