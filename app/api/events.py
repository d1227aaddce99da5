"""GET /api/jobs/<id>/events: a job's tokens as Server-Sent Events, resumable with Last-Event-ID.

The stream never cancels or owns the job: a client that goes away only stops reading. It holds no
database session while it waits (sessions are opened per check), so idle streams cost a thread only.
"""

import json
import re
import time

from flask import Response, request, stream_with_context
from redis import RedisError

from app import streams
from app.api import bp
from app.api.routes import get_job, job_json
from app.errors import APIError
from app.extensions import current, db
from app.models import Job

KEEPALIVE_SECONDS = 15
EVENT_ID = re.compile(r"^\d+-\d+$")


def sse(event: str, data: dict, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


@bp.get("/jobs/<int:job_id>/events")
def job_events(job_id: int):
    get_job(job_id)
    after = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or "0-0"
    if not EVENT_ID.match(after):
        raise APIError(400, "invalid_request", "Last-Event-ID must be an event id from this stream, like '1700000000000-0'")
    db.session.remove()
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream_with_context(_events(job_id, after)), mimetype="text/event-stream", headers=headers)


def _events(job_id: int, after: str):
    redis, shutting_down = current().redis, current().shutting_down
    yield f": job {job_id}\n\n"  # sends the headers through proxies at once
    cursor, seen_any, quiet_since = after, after != "0-0", 0.0  # 0.0: check the database at the first pause
    while not shutting_down.is_set():  # on shutdown the client reconnects (Last-Event-ID) elsewhere
        try:
            entries = streams.read(redis, job_id, cursor, block_ms=1000)
        except RedisError:
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


def _terminal(job_id: int, entry_id: str) -> str:
    job = _load(job_id)
    return sse(job["status"], job, entry_id)


def _load(job_id: int) -> dict:
    try:
        return job_json(db.session.get(Job, job_id))
    finally:
        db.session.remove()
