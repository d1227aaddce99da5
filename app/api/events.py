"""GET /api/jobs/<id>/events: a job's tokens as Server-Sent Events, resumable with Last-Event-ID.

The stream never cancels or owns the job: a client that goes away only stops reading. It holds no database
session while it waits (sessions are opened per check). Each open stream holds one of waitress's threads for its
whole life, so it takes one of the app's reader slots (per key and per process), or gets 429.
"""

import json
import re

from flask import Response, request, stream_with_context

from app import job_views, streams
from app.api import bp
from app.api.routes import get_job
from app.errors import APIError
from app.extensions import current, db
from app.keys import presented_key, take_reader_slot, valid_key
from app.models import Job

# Proxies close quiet connections, and a client that left is only noticed when a write fails: both want a
# comment now and then. Each also checks the key (revoked: the stream ends) and the job in the database (in
# case its stream was lost).
KEEPALIVE_SECONDS = 5
# A Redis stream entry id: two unsigned 64-bit numbers, ASCII digits only.
EVENT_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


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
    give_back = take_reader_slot("close a stream, or poll GET /api/jobs/{id}")
    db.session.remove()
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    response = Response(stream_with_context(_events(job_id, after)), mimetype="text/event-stream", headers=headers)
    response.call_on_close(give_back)  # after the stream ends or the client left, outside any app context
    return response


def _events(job_id: int, after: str):
    yield f": job {job_id}\n\n"  # sends the headers through proxies at once
    seen_any = after != "0-0"
    # On shutdown `follow` stops and the client reconnects (Last-Event-ID) elsewhere.
    for entry in streams.follow(current().redis, job_id, after, current().shutting_down, KEEPALIVE_SECONDS):
        if entry.kind == "token":
            seen_any = True
            yield sse("token", {"text": entry.value}, entry.id)
        elif entry.kind == "reset":
            yield sse("reset", {"attempt": int(entry.value)}, entry.id)
        elif entry.kind == "end":
            job = _load(job_id)
            yield sse(job["status"], job, entry.id)
            return
        elif not still_valid_key():
            yield sse("error", {"error": {"code": "unauthorized", "message": "the API key was revoked"}})
            return
        else:
            job = _load(job_id)
            if job["status"] in ("done", "error", "cancelled"):
                # The stream is gone (expired or Redis was wiped): send what the database holds.
                if job["result"] and not seen_any:
                    yield sse("token", {"text": job["result"]}, None)
                yield sse(job["status"], job)
                return
            yield ": keep-alive\n\n"


def still_valid_key() -> bool:
    try:
        return valid_key(presented_key()) is not None
    finally:
        db.session.remove()


def _load(job_id: int) -> dict:
    try:
        return job_views.job_json(db.session.get(Job, job_id))
    finally:
        db.session.remove()
