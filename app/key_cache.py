"""API key checks remembered for KEY_CACHE_SECONDS: a request whose key was checked a moment ago skips the key's
`SELECT`, which cost more Python than most routes (docs/benchmarks.md, the web tier).

A key revoked, or its user disabled, is refused at once everywhere all the same: the process that commits such a
change forgets every remembered key at that commit (app/keys.py) and announces it on a Redis channel, and each
serving web process (`listen`) forgets too when it hears it. Only a change nobody announced (an edit of the
database by hand) or one made while Redis was away waits for the bound, KEY_CACHE_SECONDS. Unknown keys are never
remembered, so a new key works at once everywhere. Open event streams look their key up in the database every 5 s
themselves (app/follow.py), so they end as before."""

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from redis import Redis, RedisError

log = logging.getLogger(__name__)

KEY_CACHE_SECONDS = 2.0  # the revocation lag when a change is not heard of; docs/security.md states it
CHANGES = "llamalith:keys-changed"  # the Redis channel on which a process says that keys or users changed
RELISTEN_SECONDS = 1.0  # after losing Redis, the listener tries again this often

Checked = TypeVar("Checked")


class KeyCache(Generic[Checked]):
    """Checked keys by digest, each until its deadline; `load` checks a key that is not remembered (None: not
    valid). After `forget_all`, a lookup that began before it does not store its answer, which may be stale."""

    def __init__(self, load: Callable[[str], Checked | None], seconds: float = KEY_CACHE_SECONDS):
        self.load, self.seconds = load, seconds
        self._found: dict[str, tuple[float, Checked]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def get(self, digest: str) -> Checked | None:
        """The key with this digest if it is valid: remembered, or looked up (and remembered)."""
        remembered = self._found.get(digest)
        if remembered and remembered[0] > time.monotonic():
            return remembered[1]
        generation = self._generation
        found = self.load(digest)
        with self._lock:
            if found is None:
                self._found.pop(digest, None)
            elif generation == self._generation:
                self._found[digest] = (time.monotonic() + self.seconds, found)
        return found

    def remember(self, digest: str, checked: Checked) -> None:
        """An updated copy of a remembered key (its last use), keeping its deadline."""
        with self._lock:
            if remembered := self._found.get(digest):
                self._found[digest] = (remembered[0], checked)

    def forget_all(self) -> None:
        with self._lock:
            self._found.clear()
            self._generation += 1

    def listen(self, redis: Redis) -> None:
        """Forget every remembered key whenever another process announces a change (`announce_change`), from a thread
        of this process's own, for as long as it lives."""
        threading.Thread(target=self._follow_changes, args=(redis,), name="key-changes", daemon=True).start()

    def _follow_changes(self, redis: Redis) -> None:
        heard = said = False  # once connected, a lost connection is logged once, not every second
        while True:
            try:
                with redis.pubsub() as changes:
                    changes.subscribe(CHANGES)
                    for _ in changes.listen():  # the first is the subscription's confirmation
                        heard, said = True, False
                        self.forget_all()  # then: whatever was remembered unheard is forgotten too
            except RedisError as exc:
                if heard and not said:  # before the first connection, Redis is still starting (make run)
                    log.warning("not hearing of key changes from other processes: Redis is unreachable (%s); "
                                "meanwhile keys are remembered for at most %s s", exc, KEY_CACHE_SECONDS)
                    said = True
            time.sleep(RELISTEN_SECONDS)


def announce_change(redis: Redis) -> None:
    """Tell every listening process that keys or users changed (they forget what they remembered)."""
    try:
        redis.publish(CHANGES, "1")
    except RedisError as exc:
        log.warning("a key change was not announced: Redis is unreachable (%s); other processes follow it "
                    "within %s s", exc, KEY_CACHE_SECONDS)
