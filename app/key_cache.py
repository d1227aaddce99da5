"""API key checks remembered for KEY_CACHE_SECONDS: a request whose key was checked a moment ago skips the key's
`SELECT`, which cost more Python than most routes (docs/benchmarks.md, the web tier).

The price is a bounded revocation lag: a key revoked, or its user disabled, by another process (the CLI, another
web process) is still taken here for at most KEY_CACHE_SECONDS. The process that commits such a change forgets
every remembered key at that commit (app/keys.py), so there the key is refused at once. Unknown keys are never
remembered, so a new key works at once everywhere. Open event streams look their key up in the database every 5 s
themselves (app/follow.py), so they end as before."""

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

KEY_CACHE_SECONDS = 2.0  # the revocation lag across processes; docs/security.md states it

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
