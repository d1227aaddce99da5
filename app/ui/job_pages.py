"""The jobs pages, and the assistant bubble that follows one job until it ends (polling while it runs)."""

from dataclasses import dataclass

from flask import abort, redirect, render_template, request, url_for
from sqlalchemy import select

from app import jobs
from app.extensions import db
from app.models import Conversation, Job, JobStatus, Message
from app.ui import bp, wants_fragment
from app.ui.paging import paginate

JOBS_PER_PAGE = 50
STATUSES = [status.value for status in JobStatus]


@dataclass
class Answer:
    """What an assistant bubble shows for a job: the text so far (or the final text) and its queue position."""

    job: Job
    text: str
    position: int | None


def answer_for(job: Job, reply: Message | None) -> Answer:
    if job.status == JobStatus.PROCESSING.value:
        text = jobs.partial_result(job)  # from the live token stream: tokens show up as they are generated
    else:
        text = reply.content if reply else job.result or ""
    return Answer(job, text, jobs.queue_position(job))


def reply_to(job: Job) -> Message | None:
    return db.session.scalar(select(Message).where(Message.job_id == job.id, Message.role == "assistant"))


def bubble_location(job: Job) -> str:
    return url_for("ui.chat", conversation_id=job.conversation_id, _anchor=f"job-{job.id}")


@bp.get("/jobs")
def jobs_list():
    status = request.args.get("status", "")
    if status and status not in STATUSES:
        abort(400, f"Unknown status '{status}'; use one of: {', '.join(STATUSES)}.")
    query = (select(Job, Conversation.title).join(Conversation, Conversation.id == Job.conversation_id)
             .order_by(Job.id.desc()))
    if status:
        query = query.where(Job.status == status)
    page = paginate(db.session.execute, query, JOBS_PER_PAGE)
    template = "partials/_jobs_table.html" if wants_fragment() else "jobs.html"
    return render_template(template, page=page, status=status, statuses=STATUSES,
                           active=any(not job.finished for job, _ in page.items))


@bp.get("/jobs/<int:job_id>")
def job(job_id: int):
    job = db.get_or_404(Job, job_id)
    template = "partials/_job_detail.html" if wants_fragment() else "job.html"
    return render_template(template, job=job, answer=answer_for(job, reply_to(job)))


@bp.get("/jobs/<int:job_id>/answer")
def answer(job_id: int):
    """The bubble polls this; a browser without JavaScript is sent to the bubble in its conversation."""
    job = db.get_or_404(Job, job_id)
    if not wants_fragment():
        return redirect(bubble_location(job))
    return render_template("partials/_answer.html", answer=answer_for(job, reply_to(job)))


@bp.post("/jobs/<int:job_id>/stop")
def stop(job_id: int):
    job = db.get_or_404(Job, job_id)
    try:
        job = jobs.cancel(job)
    except jobs.AlreadyFinished:
        pass  # it ended on its own meanwhile; the bubble shows how
    if not wants_fragment():
        return redirect(bubble_location(job), 303)
    return render_template("partials/_answer.html", answer=answer_for(job, reply_to(job)))
