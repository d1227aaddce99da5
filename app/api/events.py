"""GET /api/jobs/<id>/events: a job's tokens as Server-Sent Events, resumable with Last-Event-ID.

The stream never cancels or owns the job: a client that goes away only stops reading. It holds no database
session while it waits (sessions are opened per check). Each open stream holds one of waitress's threads for its
whole life, so it takes one of the app's reader slots (per key and per process), or gets 429.
"""

from flask import Response, request, stream_with_context

from app import follow, job_views
from app.api import bp
from app.api.routes import get_job
from app.errors import APIError
from app.extensions import db
from app.follow import sse
from app.keys import presented_key, take_reader_slot


def resume_point(value: str) -> str:
    if follow.event_id(value) is None:
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
    response = Response(stream_with_context(_events(job_id, after, presented_key())), mimetype="text/event-stream",
                        headers=headers)
    response.call_on_close(give_back)  # after the stream ends or the client left, outside any app context
    return response


def _events(job_id: int, after: str, key: str | None):
    yield f": job {job_id}\n\n"  # sends the headers through proxies at once
    # On shutdown the steps stop short and the client reconnects (Last-Event-ID) elsewhere.
    for step in follow.until_end(job_id, after, key):
        if step.kind == "token":
            yield sse("token", {"text": step.value}, step.id)
        elif step.kind == "reset":
            yield sse("reset", {"attempt": int(step.value)}, step.id)
        elif step.kind == "revoked":
            yield sse("error", {"error": {"code": "unauthorized", "message": "the API key was revoked"}})
        elif step.kind == "quiet":
            yield ": keep-alive\n\n"
        else:
            job = job_views.job_json(step.job)
            if step.missed:
                yield sse("token", {"text": step.missed}, None)
            yield sse(job["status"], job, step.id)
