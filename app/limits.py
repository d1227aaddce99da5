"""Rate limits, counted in Redis through the `limits` library's storage: requests per API key, failed API
authentications per address, sign-in attempts per name and per address. Each count is one atomic hit, so concurrent
requests can never all slip under a limit. If Redis is unreachable, requests are let through (and the log says so):
nothing works without Redis anyway, and locking everyone out while it restarts would be worse."""

import logging
import math
import time

from flask import Flask
from limits import RateLimitItem, RateLimitItemPerSecond, parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from redis import RedisError

from app.extensions import current

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Fixed windows, counted in the app's Redis. Every count is taken explicitly, where its identity is known
    (Flask-Limiter, used before, also ran hooks around every request for route limits we never set: a tenth of a
    poll's time)."""
    app.rate_limiter = FixedWindowRateLimiter(storage_from_string(storage_uri(app.settings.redis_address)))


class Limited(Exception):
    """Over a limit; `retry_after` is how many seconds until the window lets the next one in."""

    def __init__(self, retry_after: int):
        super().__init__(f"retry in {retry_after} s")
        self.retry_after = retry_after


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


def take(item: RateLimitItem, *identity: str) -> None:
    """Count one against `item` for `identity`, or raise `Limited` if that would go over it."""
    try:
        if current().rate_limiter.hit(item, *identity):
            return
        reset = current().rate_limiter.get_window_stats(item, *identity).reset_time
    except RedisError as exc:
        log.warning("rate limit %s unavailable (%s); letting the request through", identity[0], exc)
        return
    raise Limited(max(1, math.ceil(reset - time.time())))


def forget(item: RateLimitItem, *identity: str) -> None:
    try:
        current().rate_limiter.clear(item, *identity)
    except RedisError:
        pass


def storage_uri(redis_address: str) -> str:
    """The `limits` library's name for the same Redis (it spells unix sockets `redis+unix://`)."""
    return "redis+unix://" + redis_address.removeprefix("unix://") if redis_address.startswith("unix://") else redis_address
