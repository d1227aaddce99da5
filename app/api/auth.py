"""API keys: random tokens shown once, stored as SHA-256 digests (they are long and random, so a slow
hash adds nothing), looked up by digest and compared in constant time."""

import hashlib
import hmac
import secrets
import time
from datetime import timedelta

from flask import g, request
from redis import RedisError
from sqlalchemy import select

from app.api import bp
from app.errors import APIError
from app.extensions import current, db
from app.models import ApiKey, utcnow

PREFIX = "llk_"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(name: str, interactive: bool = False) -> str:
    key = PREFIX + secrets.token_urlsafe(32)
    db.session.add(ApiKey(name=name, key_hash=digest(key), prefix=key[:8], interactive=interactive))
    db.session.commit()
    return key


def presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("X-API-Key")


@bp.before_request
def require_api_key() -> None:
    key = presented_key()
    if not key:
        raise APIError(401, "unauthorized", "an API key is required: send 'Authorization: Bearer <key>'")
    wanted = digest(key)
    api_key = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == wanted))
    if api_key is None or not hmac.compare_digest(api_key.key_hash, wanted):
        raise APIError(401, "unauthorized", "the API key is not valid (it may have been revoked)")
    if api_key.last_used_at is None or api_key.last_used_at < utcnow() - timedelta(minutes=1):
        api_key.last_used_at = utcnow()
        db.session.commit()
    g.api_key = api_key
    enforce_rate_limit(api_key)


def enforce_rate_limit(api_key: ApiKey) -> None:
    """At most API_RATE_LIMIT requests per key per clock minute, so one automation cannot flood the box.
    Counted in Redis to hold across web processes; if Redis is down, requests are let through."""
    limit = current().settings.api_rate_limit
    if not limit:
        return
    window = int(time.time() // 60)
    key = f"llamalith:rate:{api_key.id}:{window}"
    try:
        count, _ = current().redis.pipeline().incr(key).expire(key, 120).execute()
    except RedisError:
        return
    if count > limit:
        retry_after = str(60 - int(time.time() % 60))
        raise APIError(429, "rate_limited", f"more than {limit} requests this minute with this key; "
                                            f"retry in {retry_after} s", headers={"Retry-After": retry_after})
