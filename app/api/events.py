"""GET /api/jobs/<id>/events: a job's tokens as Server-Sent Events, resumable with Last-Event-ID.

The stream never cancels or owns the job: a client that goes away only stops reading. It holds no database
session while it waits (sessions are opened per check). Each open stream holds one of waitress's threads for its
whole life, so streams are capped per key and per web process, below the thread count (`StreamSlots`).
"""

import json
import re
import threading
import time
from collections import Counter

from flask import Response, g, request, stream_with_context
from redis import RedisError

from app import streams
from app.api import bp
from app.api.auth import presented_key, valid_key
from app.api.routes import get_job, job_json
from app.errors import APIError
from app.extensions import current, db
from app.models import Job

# Proxies close quiet connections, and a client that left is only noticed when a write fails: both want a
# comment now and then. Each also checks the job in the database, in case its stream was lost.
KEEPALIVE_SECONDS = 5
KEY_CHECK_SECONDS = 5  # a revoked key's open streams end within this
REDIS_BACKOFF = (0.5, 8.0)  # seconds to wait after a Redis error: first, most
# A Redis stream entry id: two unsigned 64-bit numbers, ASCII digits only.
EVENT_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


class StreamSlots:
    """Open streams in this web process, in total and per key: a request over either cap gets 429 at once,
    so streams can never take the threads that ordinary requests (and /healthz) need."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: Counter[int] = Counter()

    def take(self, key_id: int) -> bool:
        settings = current().settings
        with self.lock:
            if sum(self.open.values()) >= settings.sse_max_streams or \
                    self.open[key_id] >= settings.sse_max_streams_per_key:
                return False
            self.open[key_id] += 1
            return True

    def give_back(self, key_id: int) -> None:
        with self.lock:
            self.open[key_id] -= 1


slots = StreamSlots()


def sse(event: str, data: dict, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


def resume_point(value: str) -> str:
    found = EVENT_ID.fullmatch(value)
    if not found or any(int(part) >= 2**64 for part in found.groups()):
        raise APIError(400, "invalid_request", "Last-Event-ID must be an event id from this stream, like "
                                               "'1700000000000-0'")
    return value


@bp.get("/jobs/<int:job_id>/events")
def job_events(job_id: int):
    get_job(job_id)
    after = resume_point(request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or "0-0")
    key_id = g.api_key.id
    if not slots.take(key_id):
        raise APIError(429, "too_many_streams", "too many open event streams (for this key, or on this server); "
                                                "close one, or poll GET /api/jobs/{id}", headers={"Retry-After": "5"})
    db.session.remove()
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    response = Response(stream_with_context(_events(job_id, after)), mimetype="text/event-stream",
                        headers=headers)
    response.call_on_close(lambda: slots.give_back(key_id))
    return response


def _events(job_id: int, after: str):
    redis, shutting_down = current().redis, current().shutting_down
    yield f": job {job_id}\n\n"  # sends the headers through proxies at once
    cursor, seen_any, quiet_since = after, after != "0-0", 0.0  # 0.0: check the database at the first pause
    backoff, key_checked = 0.0, time.monotonic()
    while not shutting_down.is_set():  # on shutdown the client reconnects (Last-Event-ID) elsewhere
        try:
            entries = streams.read(redis, job_id, cursor, block_ms=1000)
            backoff = 0.0
        except RedisError:  # wait before trying again, longer each time: never a busy loop
            backoff = min(max(backoff * 2, REDIS_BACKOFF[0]), REDIS_BACKOFF[1])
            shutting_down.wait(backoff)
            entries = []
        for entry_id, fields in entries:
            cursor, seen_any, quiet_since = entry_id, True, time.monotonic()
            if "t" in fields:
                yield sse("token", {"text": fields["t"]}, entry_id)
            elif "reset" in fields:
                yield sse("reset", {"attempt": int(fields["reset"])}, entry_id)
            elif "end" in fields:
                yield _terminal(job_id, entry_id)
                return
        if time.monotonic() - key_checked >= KEY_CHECK_SECONDS:
            if not _key_still_valid():
                yield sse("error", {"error": {"code": "unauthorized", "message": "the API key was revoked"}})
                return
            key_checked = time.monotonic()
        if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
            job = _load(job_id)
            if job["status"] in ("done", "error", "cancelled"):
                # The stream is gone (expired or Redis was wiped): send what the database holds.
                if job["result"] and not seen_any:
                    yield sse("token", {"text": job["result"]}, None)
                yield sse(job["status"], job)
                return
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()


def _key_still_valid() -> bool:
    try:
        return valid_key(presented_key()) is not None
    finally:
        db.session.remove()


def _terminal(job_id: int, entry_id: str) -> str:
    job = _load(job_id)
    return sse(job["status"], job, entry_id)


def _load(job_id: int) -> dict:
    try:
        return job_json(db.session.get(Job, job_id))
    finally:
        db.session.remove()
