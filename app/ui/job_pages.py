"""The jobs pages: every job, newest first, filtered by status; and one job with everything known about it."""

import json

from flask import abort, render_template, request
from sqlalchemy import select

from app.extensions import db
from app.progress import running_beside
from app.models import Conversation, Job, JobStatus, User
from app.ui import bp, viewable_or_404, visible, wants_fragment
from app.ui.answers import answer_for
from app.ui.paging import paginate

JOBS_PER_PAGE = 50
STATUSES = [status.value for status in JobStatus]


@bp.get("/jobs")
def jobs_list():
    status = request.args.get("status", "")
    if status and status not in STATUSES:
        abort(400, f"Unknown status '{status}'; use one of: {', '.join(STATUSES)}.")
    query = (select(Job, Conversation.title, User.name).join(Conversation, Conversation.id == Job.conversation_id)
             .outerjoin(User, User.id == Job.user_id).where(visible(Job.user_id)).order_by(Job.id.desc()))
    if status:
        query = query.where(Job.status == status)
    if batch := request.args.get("batch", ""):  # the lines of one batch (the Batches page links here)
        query = query.where(Job.batch_id == batch)
    page = paginate(db.session.execute, query, JOBS_PER_PAGE)
    template = "partials/_jobs_table.html" if wants_fragment() else "jobs.html"
    return render_template(template, page=page, status=status, statuses=STATUSES, batch=batch,
                           active=any(not job.finished for job, *_ in page.items), beside=running_beside())


@bp.get("/jobs/<int:job_id>")
def job(job_id: int):
    job = viewable_or_404(db.session.get(Job, job_id))
    template = "partials/_job_detail.html" if wants_fragment() else "job.html"
    return render_template(template, job=job, answer=answer_for(job), variables=stored_variables(job))


def stored_variables(job: Job) -> dict[str, str]:
    """The template values a job was submitted with, as text any page can show. They are stored as JSON, which
    holds any shape and lone surrogates (\\ud800, which no page can be encoded with): older versions let such names
    in, so whatever was stored is shown escaped rather than failing the page."""
    stored = job.prompt_variables
    if not isinstance(stored, dict):
        return {}
    return {_showable(name): _showable(value) for name, value in stored.items()}


def _showable(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.encode("utf-8", "backslashreplace").decode()
