"""The assistant bubble: what it shows for a job in every state, and what can be done with it (follow it while
it runs, token by token over Server-Sent Events, or by polling; stop it, regenerate it)."""

from collections.abc import Iterable
from dataclasses import dataclass

from flask import Response, abort, redirect, render_template, request, stream_with_context, url_for
from flask_login import current_user
from sqlalchemy import func, select

from app import follow, intake, jobs, progress
from app.extensions import current, db
from app.keys import take_browser_slot
from app.models import Job, JobStatus, Message
from app.ui import bp, owned_or_404, viewable_or_404, wants_fragment


@dataclass
class Answer:
    """A bubble's content: the text so far (or the final text), the queue position, and whether it may be
    regenerated (the conversation's last answer, once it has ended, by a model offered here: an imported
    conversation's may not be)."""

    job: Job
    text: str
    position: int | None
    last: bool


def answers_for(found: Iterable[Job], last_job_id: int | None = None) -> dict[int, Answer]:
    """Bubbles for many jobs of one conversation in a few statements; `last_job_id` is its newest job."""
    found = list(found)
    standing = progress.of(found)
    replies = dict(db.session.execute(select(Message.job_id, Message.content).where(
        Message.job_id.in_([job.id for job in found]), Message.role == "assistant")).all())
    answers = {}
    for job in found:
        if job.status == JobStatus.PROCESSING.value:
            text = standing[job.id].partial or ""  # from the live token stream: tokens show up as they are made
        else:
            text = replies.get(job.id, job.result or "")
        last = job.id == last_job_id and job.model in current().settings.offered_models
        answers[job.id] = Answer(job, text, standing[job.id].position, last)
    return answers


def answer_for(job: Job) -> Answer:
    latest = db.session.scalar(select(func.max(Job.id)).where(Job.conversation_id == job.conversation_id))
    return answers_for([job], latest)[job.id]


def bubble_location(job: Job) -> str:
    return url_for("ui.chat", conversation_id=job.conversation_id, _anchor=f"job-{job.id}")


def _bubble(job: Job, poll: bool = False):
    return render_template("partials/_answer.html", answer=answer_for(job), poll=poll)


@bp.get("/jobs/<int:job_id>/answer")
def answer(job_id: int):
    """The bubble as it is now: a waiting bubble polls this, a running one fetches it once at its end (and polls
    it with `poll=1` when it cannot follow the job's events); a browser without JavaScript is sent to the bubble in
    its conversation."""
    job = viewable_or_404(db.session.get(Job, job_id))
    if not wants_fragment():
        return redirect(bubble_location(job))
    return _bubble(job, poll=request.args.get("poll") == "1")


@bp.get("/jobs/<int:job_id>/events")
def answer_events(job_id: int):
    """A running bubble follows its job here (app/static/js/app.js): `ready` at once, then each token as it comes
    (`token`, `reset` when the job starts again), resumable with Last-Event-ID, then `end` with the status. The stream holds a web thread,
    so it takes one of the reader slots API streams take (the user's pages count as one key); over a cap, 429, and
    the bubble polls instead."""
    viewable_or_404(db.session.get(Job, job_id))
    after = follow.event_id(request.headers.get("Last-Event-ID") or "0-0")
    if after is None:
        abort(400, "Last-Event-ID must be an event id from this stream")
    give_back = take_browser_slot(current_user.id)
    if give_back is None:
        abort(429, "too many streams are open; the answer is polled instead")
    db.session.remove()
    response = Response(stream_with_context(_events(job_id, after)), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response.call_on_close(give_back)  # after the stream ends or the page left, outside any app context
    return response


def _events(job_id: int, after: str):
    # A dropped stream is resumed within a second; `ready` tells the page that events get through at once (behind a
    # proxy that holds the body back, it never comes in time, and the page polls instead).
    yield f"retry: 1000\n{follow.sse('ready', job_id)}"
    for step in follow.until_end(job_id, after):  # on shutdown it stops short: the page reconnects elsewhere
        if step.kind in ("token", "reset"):
            yield follow.sse(step.kind, step.value, step.id)
        elif step.kind == "quiet":
            yield ": keep-alive\n\n"
        else:
            if step.missed:
                yield follow.sse("token", step.missed)
            yield follow.sse("end", step.job.status, step.id)


@bp.post("/jobs/<int:job_id>/stop")
def stop(job_id: int):
    job = owned_or_404(db.session.get(Job, job_id))
    try:
        job = jobs.cancel(job)
    except jobs.AlreadyFinished:
        pass  # it ended on its own meanwhile; the bubble shows how
    except jobs.QueueUnavailable as exc:
        abort(503, str(exc))
    if not wants_fragment():
        return redirect(bubble_location(job), 303)
    return _bubble(job)


@bp.post("/jobs/<int:job_id>/regenerate")
def regenerate(job_id: int):
    """A new job answers the same turn; its bubble takes the old one's place."""
    job = owned_or_404(db.session.get(Job, job_id))
    try:
        job = intake.regenerate(job)  # refused like a new submission: app/errors.py answers with the same status
    except jobs.NotRegenerable as exc:
        abort(409, str(exc))
    if not wants_fragment():
        return redirect(bubble_location(job), 303)
    return _bubble(job)
