"""Following a job until it ends: its tokens as they come, a restart, quiet ticks, and its end with the job as the
database holds it. One loop for every face that waits on a job (/api's event stream, /v1's streamed and whole
answers); each formats the steps in its own wire format.

It holds no database session while it waits (one is opened per look at the job), and stops early when the server
shuts down: then it simply ends without an `end` step, and the face tells its client where to find the job."""

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from app import streams
from app.extensions import current, db
from app.keys import valid_key
from app.models import Job

# A Redis stream entry id: two unsigned 64-bit numbers, ASCII digits only.
EVENT_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")

# Proxies close quiet connections, and a client that left is only noticed when a write fails: both want something
# now and then. Each tick also checks the key (revoked: the stream ends) and the job in the database (in case its
# stream was lost).
TICK_SECONDS = 5


@dataclass
class Step:
    """What happened: a `token` (its text), a `reset` (the worker started the job again: the new attempt), `quiet`
    (a tick without news), `revoked` (the key that asked no longer works) or the `end`, with the job as stored and
    `missed`: the stored text when the stream showed none of it (it expired, or Redis was wiped)."""

    kind: str
    value: str = ""
    id: str | None = None  # the stream entry's id, for Last-Event-ID
    job: Job | None = None
    missed: str | None = None


def until_end(job_id: int, after: str = "0-0", key: str | None = None) -> Iterator[Step]:
    """The job's steps after the stream entry `after`, up to and including its end. With `key`, the API key that
    asked, each tick first checks it still works."""
    seen = after != "0-0"
    db.session.remove()
    for entry in streams.follow(current().redis, job_id, after, current().shutting_down, TICK_SECONDS):
        if entry.kind in ("token", "reset"):
            seen = seen or entry.kind == "token"
            yield Step(entry.kind, entry.value, entry.id)
            continue
        if entry.kind == "tick" and key is not None and not _still_valid(key):
            yield Step("revoked")
            return
        job = _fresh(job_id)
        if entry.kind == "tick" and not job.finished:
            db.session.remove()
            yield Step("quiet")
            continue
        yield Step("end", entry.value, entry.id, job, None if seen else job.result or None)
        return


def ended(job_id: int) -> Job | None:
    """The job once it ended, or None when the server began shutting down first (the job goes on without us)."""
    return next((step.job for step in until_end(job_id) if step.kind == "end"), None)


def event_id(value: str) -> str | None:
    """`value` if it is an event id of a job's stream (a Last-Event-ID to resume after), else None."""
    found = EVENT_ID.fullmatch(value)
    return value if found and all(int(part) < 2**64 for part in found.groups()) else None


def sse(event: str, data, event_id: str | None = None) -> str:
    """One Server-Sent Event, its data as JSON (tokens hold newlines, which SSE's data lines cannot)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


def _still_valid(key: str) -> bool:
    try:
        return valid_key(key) is not None
    finally:
        db.session.remove()


def _fresh(job_id: int) -> Job:
    db.session.remove()  # a new read: the worker wrote it
    return db.session.get(Job, job_id)
