"""Rate limits, counted in Redis in fixed windows: requests per API key, failed API authentications per address,
sign-in attempts per name and per address. Every count is an atomic `INCRBY` in Redis, so the processes together
never let more through than a limit allows. If Redis is unreachable, requests are let through (and the log says
so): nothing works without Redis anyway, and locking everyone out while it restarts would be worse.

A key's requests are counted a few at a time: a web process takes up to LEASE_MAX hits of the key's window from
Redis at once (a lease) and lets that many requests through without asking again. The round trip was most of a
poll's cost under load (docs/benchmarks.md, the web tier). A lease is small next to the limit (a 64th of it, and
an 8th of what was left), so a limit of 64 a window or less is still counted one by one, and the price is bounded:
another process may be refused up to LEASE_MAX requests early in a window while this one holds hits it does not
use."""

import logging
import math
import threading
import time
from dataclasses import dataclass

from flask import Flask
from limits import RateLimitItem, RateLimitItemPerSecond, parse
from redis import Redis, RedisError

from app.extensions import current

log = logging.getLogger(__name__)

LEASE_MAX = 16  # hits of a key's window a process takes at once
KEY_PREFIX = "llamalith:rate:"
# One window's count: add the hits, start the window's clock on its first hit; the count and the ms left.
_COUNT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  left = tonumber(ARGV[2])
end
return {count, left}
"""


class Limited(Exception):
    """Over a limit; `retry_after` is how many seconds until the window lets the next one in."""

    def __init__(self, retry_after: int):
        super().__init__(f"retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Lease:
    left: int  # hits taken from Redis and not used yet
    until: float  # the window's end (time.monotonic())
    counted: int  # the window's count in Redis when they were taken


class RateCounts:
    """The windows' counts in Redis, and the hits this process has taken ahead of its requests."""

    def __init__(self, redis: Redis):
        self.count = redis.register_script(_COUNT)
        self.redis = redis
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()

    def take(self, item: RateLimitItem, identity: tuple[str, ...], ahead: bool) -> None:
        """One hit against `item` for `identity` (with `ahead`, from a lease), or raise `Limited`."""
        key = KEY_PREFIX + item.key_for(*identity)
        with self._lock:
            lease = self._leases.get(key)
            current_lease = lease is not None and lease.until > time.monotonic()
            if current_lease and lease.left:
                lease.left -= 1
                return
            known = lease.counted if current_lease else 0  # the window's count when this process last asked
        size = max(1, min(LEASE_MAX, item.amount // 64, (item.amount - known) // 8)) if ahead else 1
        sent = time.monotonic()  # the window ends no sooner than this plus what Redis says is left
        counted, left_ms = self.count(keys=[key], args=[size, item.get_expiry() * 1000])
        usable = min(size, item.amount - (counted - size))  # those of the hits that fit under the limit
        if usable <= 0:
            raise Limited(max(1, math.ceil(left_ms / 1000)))
        if ahead:
            with self._lock:
                self._leases[key] = _Lease(usable - 1, sent + left_ms / 1000, counted)

    def forget(self, item: RateLimitItem, identity: tuple[str, ...]) -> None:
        key = KEY_PREFIX + item.key_for(*identity)
        with self._lock:
            self._leases.pop(key, None)
        self.redis.delete(key)


def init_app(app: Flask) -> None:
    app.rate_counts = RateCounts(app.redis)


def per_key(rate_limit: str | None) -> RateLimitItem | None:
    """A key's own limit ("60/minute"), else API_RATE_LIMIT per minute; None when unlimited."""
    if rate_limit:
        return parse(rate_limit)
    per_minute = current().settings.api_rate_limit
    return RateLimitItemPerSecond(per_minute, 60) if per_minute else None


def login_per_name() -> RateLimitItem:
    settings = current().settings
    return RateLimitItemPerSecond(settings.login_attempts, settings.login_window)


def login_per_address() -> RateLimitItem:
    settings = current().settings
    return RateLimitItemPerSecond(settings.login_attempts_per_address, settings.login_window)


def auth_failures_per_address() -> RateLimitItem:
    return RateLimitItemPerSecond(current().settings.api_auth_failures, 300)


def take(item: RateLimitItem, *identity: str, ahead: bool = False) -> None:
    """Count one against `item` for `identity`, or raise `Limited` if that would go over it; `ahead`: a key's
    requests, counted a few at a time (the module's docstring)."""
    try:
        current().rate_counts.take(item, identity, ahead)
    except RedisError as exc:
        log.warning("rate limit %s unavailable (%s); letting the request through", identity[0], exc)


def forget(item: RateLimitItem, *identity: str) -> None:
    try:
        current().rate_counts.forget(item, identity)
    except RedisError:
        pass
