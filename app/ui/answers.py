"""The assistant bubble: what it shows for a job in every state, and what can be done with it (follow it while
it runs, stop it, regenerate it)."""

from collections.abc import Iterable
from dataclasses import dataclass

from flask import abort, redirect, render_template, url_for
from sqlalchemy import func, select

from app import intake, jobs, progress
from app.extensions import current, db
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


def _bubble(job: Job):
    return render_template("partials/_answer.html", answer=answer_for(job))


@bp.get("/jobs/<int:job_id>/answer")
def answer(job_id: int):
    """The bubble polls this; a browser without JavaScript is sent to the bubble in its conversation."""
    job = viewable_or_404(db.session.get(Job, job_id))
    if not wants_fragment():
        return redirect(bubble_location(job))
    return _bubble(job)


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
