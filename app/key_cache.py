"""API key checks remembered for KEY_CACHE_SECONDS: a request whose key was checked a moment ago skips the key's
`SELECT`, which cost more Python than most routes (docs/benchmarks.md, the web tier).

The price is a bounded revocation lag: a key revoked, or its user disabled, by another process (the CLI, another
web process) is still taken here for at most KEY_CACHE_SECONDS. The process that commits such a change forgets
every remembered key at that commit, so there the key is refused at once. Unknown keys are never remembered, so a
new key works at once everywhere. Open event streams look their key up in the database every 5 s themselves
(app/api/events.py), so they end as before."""

import hmac
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.extensions import current, db
from app.models import ApiKey, User

KEY_CACHE_SECONDS = 2.0  # the revocation lag across processes; docs/security.md states it


@dataclass(frozen=True)
class CheckedKey:
    """What a request needs of its API key (`g.api_key`): plain values, shared by the threads that use the key, so
    none of them can lazy-load or write through another's session."""

    id: int
    user_id: int
    interactive: bool
    rate_limit: str | None
    webhook_secret: str | None
    last_used_at: datetime | None

    @property
    def user(self) -> User:
        return db.session.get(User, self.user_id)


class KeyCache:
    """Checked keys by digest, each until its deadline. `forget_all` at a commit that changed keys or users; a
    lookup that began before it does not store its (maybe stale) answer."""

    def __init__(self, seconds: float = KEY_CACHE_SECONDS):
        self.seconds = seconds
        self._found: dict[str, tuple[float, CheckedKey]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def get(self, digest: str) -> CheckedKey | None:
        """The key with this digest if it is valid: remembered, or looked up (and remembered)."""
        remembered = self._found.get(digest)
        if remembered and remembered[0] > time.monotonic():
            return remembered[1]
        generation = self._generation
        found = _load(digest)
        with self._lock:
            if found is None:
                self._found.pop(digest, None)
            elif generation == self._generation:
                self._found[digest] = (time.monotonic() + self.seconds, found)
        return found

    def remember(self, digest: str, key: CheckedKey) -> None:
        """An updated copy of a remembered key (its last use), keeping its deadline."""
        with self._lock:
            if remembered := self._found.get(digest):
                self._found[digest] = (remembered[0], key)

    def forget_all(self) -> None:
        with self._lock:
            self._found.clear()
            self._generation += 1


def _load(digest: str) -> CheckedKey | None:
    """The key's fields in one statement, if the key exists and its user is not disabled."""
    row = db.session.execute(
        select(ApiKey.key_hash, ApiKey.id, ApiKey.user_id, ApiKey.interactive, ApiKey.rate_limit,
               ApiKey.webhook_secret, ApiKey.last_used_at)
        .join(User, User.id == ApiKey.user_id).where(ApiKey.key_hash == digest, User.disabled.is_(False))
    ).one_or_none()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return CheckedKey(*row[1:])


# This process's own changes to keys and users (revoke, disable, a changed limit), made through the ORM by the UI
# and the CLI, mark their session; its commit then empties the cache. Core statements (a key's last use, the no-op
# UPDATEs that take row locks) change nothing a check depends on and do not count.
CHANGED = "llamalith.keys_changed"


@event.listens_for(ApiKey, "after_update")
@event.listens_for(ApiKey, "after_delete")
@event.listens_for(User, "after_update")
@event.listens_for(User, "after_delete")
def _mark(_mapper, _connection, target) -> None:
    if session := Session.object_session(target):
        session.info[CHANGED] = True


@event.listens_for(Session, "after_commit")
def _forget(session: Session) -> None:
    if session.info.pop(CHANGED, False):
        current().key_cache.forget_all()


@event.listens_for(Session, "after_rollback")
def _unmark(session: Session) -> None:
    session.info.pop(CHANGED, None)
