"""API keys: random tokens shown once, stored as SHA-256 digests (they are long and random, so a slow hash adds
nothing), looked up by digest and compared in constant time. Each key belongs to a user and acts as that user.
`authenticate` is the check every API face runs (the JSON API, the OpenAI-compatible one), through the process's
cache of checked keys (app/key_cache.py: a change made anywhere is announced to every web process); each face
turns a `KeyRefused` into its own error format. `take_reader_slot` caps the requests a key, and its user, have waiting
on jobs; a user has at most MAX_KEYS_PER_USER keys. `usage` is what the keys did, per day; `summary`, a user's
keys in a few numbers."""

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from flask import Flask, g, request
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from app import limits
from app.errors import APIError
from app.extensions import current, db
from app.key_cache import KeyCache, announce_change
from app.models import ApiKey, Job, JobStatus, User, utcnow
from app.reader_slots import SlotCaps

PREFIX = "llk_"


class KeyRefused(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class TooManyKeys(Exception):
    """The user has as many keys as MAX_KEYS_PER_USER allows; the message says what to do."""


def create_key(name: str, user_id: int, interactive: bool = False, rate_limit: str | None = None,
               max_queued: int | None = None) -> str:
    """A new key (returned, to show once); its webhook secret is on its row. Refused with `TooManyKeys` when the
    user has MAX_KEYS_PER_USER keys already: keys are cheap to make, and each brings its own per-key limits."""
    check_key_room(user_id)
    key = PREFIX + secrets.token_urlsafe(32)
    db.session.add(ApiKey(name=name, key_hash=digest(key), prefix=key[:8], user_id=user_id, interactive=interactive,
                          rate_limit=rate_limit, max_queued=max_queued, webhook_secret=secrets.token_hex(32)))
    db.session.commit()
    return key


def check_key_room(user_id: int) -> None:
    """Counted under the user's row lock (PostgreSQL) or the write lock (SQLite), taken by a no-op UPDATE and held
    until create_key commits, so concurrent requests cannot all slip under the cap."""
    db.session.execute(update(User).where(User.id == user_id).values(disabled=User.disabled)
                       .execution_options(synchronize_session=False))
    limit = current().settings.max_keys_per_user
    if db.session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.user_id == user_id)) >= limit:
        db.session.rollback()  # gives the lock back at once
        raise TooManyKeys(f"this user already has {limit} API keys, the most allowed (MAX_KEYS_PER_USER); revoke "
                          "one they no longer use first")


@dataclass(frozen=True)
class CheckedKey:
    """What a request needs of its API key (`g.api_key`): plain values, shared through the cache by the threads
    that use the key, so none of them can lazy-load or write through another's session."""

    id: int
    user_id: int
    interactive: bool
    rate_limit: str | None
    webhook_secret: str | None
    last_used_at: datetime | None

    @property
    def user(self) -> User:
        return db.session.get(User, self.user_id)


def init_app(app: Flask) -> None:
    app.key_cache = KeyCache(_checked_key)


def _checked_key(wanted: str) -> CheckedKey | None:
    """The key with the digest `wanted`, in one statement, if it exists and its user is not disabled."""
    row = db.session.execute(
        select(ApiKey.key_hash, ApiKey.id, ApiKey.user_id, ApiKey.interactive, ApiKey.rate_limit,
               ApiKey.webhook_secret, ApiKey.last_used_at)
        .join(User, User.id == ApiKey.user_id).where(ApiKey.key_hash == wanted, User.disabled.is_(False))
    ).one_or_none()
    if row is None or not hmac.compare_digest(row.key_hash, wanted):
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
        announce_change(current().redis)


@event.listens_for(Session, "after_rollback")
def _unmark(session: Session) -> None:
    session.info.pop(CHANGED, None)


def presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("X-API-Key")


def valid_key(key: str | None) -> ApiKey | None:
    """The key's row, if the key exists and its user may use it, from the database itself: open streams ask every
    few seconds, and end as soon as the key is revoked in any process."""
    if not key:
        return None
    wanted = digest(key)
    api_key = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == wanted))
    if api_key is None or not hmac.compare_digest(api_key.key_hash, wanted) or api_key.user.disabled:
        return None
    return api_key


def require_key(unauthorized_code: str = "unauthorized") -> None:
    """The before-request check of every API face: `g.api_key` (a `CheckedKey`), or a 401/429 in the face's error
    format (`unauthorized_code` is the code of a 401: OpenAI's clients expect "invalid_api_key")."""
    try:
        g.api_key = authenticate()
    except KeyRefused as refused:
        headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else None
        code = unauthorized_code if refused.status == 401 else refused.code
        raise APIError(refused.status, code, refused.message, headers=headers) from None


def take_reader_slot(advice: str) -> Callable[[], None]:
    """A reader slot for the request's key (an event stream, or a call waiting for its answer, holds a web thread),
    and the call that gives it back; over the per-key, per-user or per-process cap, a 429 that ends with `advice`."""
    give_back = current().readers.take(current().redis, g.api_key.id, g.api_key.user_id, reader_caps())
    if give_back is None:
        raise APIError(429, "too_many_streams", f"too many requests waiting on jobs (for this key, its user, or on "
                                                f"this server); {advice}", headers={"Retry-After": "5"})
    return give_back


def take_browser_slot(user_id: int) -> Callable[[], None] | None:
    """A reader slot for a signed-in user's page that follows a job: their pages count as one more key of theirs,
    under the same caps; None over a cap (the page then polls instead)."""
    return current().readers.take(current().redis, ("browser", user_id), user_id, reader_caps())


def reader_caps() -> SlotCaps:
    settings = current().settings
    return SlotCaps(settings.sse_max_streams, settings.sse_max_streams_per_key, settings.streams_per_user)


def authenticate() -> CheckedKey:
    """The request's key, counted against its rate limit; wrong keys are counted per address."""
    presented = presented_key()
    wanted = digest(presented) if presented else None
    try:
        api_key = current().key_cache.get(wanted) if wanted else None
        if api_key is None:  # a valid key is never refused for others' failures from the same address
            limits.take(limits.auth_failures_per_address(), "api-auth-failures", request.remote_addr or "unknown")
            raise KeyRefused(401, "unauthorized", "a valid API key is required: send 'Authorization: Bearer <key>' "
                                                  "(a revoked key, or one whose user is disabled, is not valid)")
        if item := limits.per_key(api_key.rate_limit):
            limits.take(item, "api-key", str(api_key.id), ahead=True)
    except limits.Limited as limited:
        raise KeyRefused(429, "rate_limited", f"too many requests; retry in {limited.retry_after} s",
                         limited.retry_after) from None
    if api_key.last_used_at is None or api_key.last_used_at < utcnow() - timedelta(minutes=1):
        api_key = replace(api_key, last_used_at=utcnow())
        db.session.execute(update(ApiKey).where(ApiKey.id == api_key.id).values(last_used_at=api_key.last_used_at))
        db.session.commit()
        current().key_cache.remember(wanted, api_key)
    return api_key


def visible_keys(user: User):
    """The keys a user may see and revoke: their own; an admin, everyone's."""
    query = select(ApiKey).order_by(ApiKey.name)
    return query if user.is_admin else query.where(ApiKey.user_id == user.id)


def usage(user: User, days: int, own: bool = False) -> list[dict]:
    """Ended jobs and their tokens per key and day (UTC) over the last `days` days, for the keys `user` may see
    (with `own`, only their own, admins too); newest day first."""
    day = func.date(Job.processed_at)
    keys = (visible_keys(user).where(ApiKey.user_id == user.id) if own else visible_keys(user)).subquery()
    rows = db.session.execute(
        select(keys.c.name, day.label("day"), func.count(Job.id), func.coalesce(func.sum(Job.prompt_tokens), 0),
               func.coalesce(func.sum(Job.completion_tokens), 0))
        .join(keys, keys.c.id == Job.api_key_id)
        .where(Job.status.in_([status.value for status in JobStatus if status.finished]),
               Job.processed_at >= utcnow() - timedelta(days=days))
        .group_by(keys.c.name, day).order_by(day.desc(), keys.c.name)
    ).all()
    return [{"key": name, "day": str(when), "jobs": jobs, "prompt_tokens": int(prompt),
             "completion_tokens": int(completion)} for name, when, jobs, prompt, completion in rows]


@dataclass(frozen=True)
class KeySummary:
    keys: int
    last_used_at: datetime | None
    jobs: int
    prompt_tokens: int
    completion_tokens: int


def summary(user: User, days: int) -> KeySummary:
    """A user's own keys in a few numbers: how many they have, when one was last used, and what `usage` counts
    over `days` days, added up."""
    count, last_used_at = db.session.execute(
        select(func.count(ApiKey.id), func.max(ApiKey.last_used_at)).where(ApiKey.user_id == user.id)).one()
    rows = usage(user, days, own=True)
    return KeySummary(count, last_used_at,
                      *(sum(row[total] for row in rows) for total in ("jobs", "prompt_tokens", "completion_tokens")))
