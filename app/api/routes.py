"""JSON routes: the contract in docs/api.md."""

from flask import g, request, url_for
from sqlalchemy import select

from app import intake, job_views, jobs, keys, progress, request_body, submissions
from app.api import bp
from app.api.schemas import SubmitRequest, parse
from app.errors import APIError
from app.extensions import current, db
from app.intake import Submission
from app.models import Conversation, Job, JobStatus, Message, Priority


def get_job(job_id: int) -> Job:
    """The key's user's job; another user's is as unknown as one that does not exist."""
    job = db.session.get(Job, job_id)
    if job is None or job.user_id != g.api_key.user_id:
        raise unknown_job(job_id)
    return job


def unknown_job(job_id: int) -> APIError:
    return APIError(404, "not_found", f"no job with id {job_id}")


def get_conversation(session_id: str) -> Conversation:
    """The key's user's conversation by its `session_id`; another user's is as unknown as one that does not exist."""
    conversation = None
    if submissions.valid_session_id(session_id):  # no other id is stored (and a NUL never reaches the database)
        conversation = db.session.scalar(select(Conversation).where(Conversation.user_id == g.api_key.user_id,
                                                                    Conversation.session_id == session_id))
    if conversation is None:
        raise APIError(404, "not_found", f"no conversation with id '{session_id}'")
    return conversation


@bp.post("/submit")
def submit():
    data = request_body.json_body()
    body = parse(SubmitRequest, data)
    job, replayed = intake.submit(Submission(
        owner=g.api_key.user_id, user_input=body.user_input, session_id=body.session_id_or_new(), model=body.model,
        system_prompt=body.system_prompt, params=body.overrides(), priority=body.priority or Priority.BATCH.value,
        api_key=g.api_key, callback_url=body.callback_url, prompt_template=body.prompt_template,
        variables=body.variables, idempotency=intake.idempotency(request.headers.get("Idempotency-Key"), data)))
    headers = {"Location": url_for("api.job", job_id=job.id)}
    if replayed:  # the job an earlier request with the same Idempotency-Key made
        headers["Idempotent-Replayed"] = "true"
    shown = job_views.owned_job_json(job.id, g.api_key.user_id)  # one statement; the job as the commit left it
    return {"job_id": job.id, **shown}, 200 if replayed else 202, headers


@bp.get("/jobs/<int:job_id>")
def job(job_id: int):
    shown = job_views.owned_job_json(job_id, g.api_key.user_id)  # one statement: polls come many times a second
    if shown is None:
        raise unknown_job(job_id)
    return shown


@bp.get("/jobs")
def list_jobs():
    query = select(Job).where(Job.user_id == g.api_key.user_id).order_by(Job.id.desc())
    if session_id := request.args.get("conversation_id"):
        query = query.join(Conversation).where(Conversation.session_id == session_id)
    if status := request.args.get("status"):
        if status not in {s.value for s in JobStatus}:
            raise APIError(400, "invalid_request", f"status must be one of: {', '.join(s.value for s in JobStatus)}")
        query = query.where(Job.status == status)
    limit = submissions.whole_number(request.args.get("limit", "50"), 1, 1000)
    if limit is None:
        raise APIError(400, "invalid_request", "limit must be a whole number from 1 to 1000")
    found = db.session.scalars(query.limit(limit)).all()
    standing = progress.of(found)
    return {"jobs": [job_views.job_json(job, standing[job.id]) for job in found]}


@bp.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int):
    try:
        return job_views.job_json(jobs.cancel(get_job(job_id)))
    except jobs.AlreadyFinished as exc:
        raise APIError(409, "job_finished", str(exc)) from None
    except jobs.QueueUnavailable as exc:
        raise APIError(503, "queue_unavailable", str(exc), headers={"Retry-After": "5"}) from None


@bp.get("/status/<conversation_id>")
def status(conversation_id: str):
    """`conversation_id` is the owner's name for it, the `session_id` it was submitted with."""
    conversation = get_conversation(conversation_id)
    last = db.session.scalar(
        select(Message.content)
        .where(Message.conversation_id == conversation.id, Message.role == "assistant")
        .order_by(Message.job_id.desc().nulls_last(), Message.id.desc()).limit(1)  # as SQLite sorts NULL unasked
    )
    return {"conversation_id": conversation_id, "response": last}


@bp.get("/usage")
def usage():
    days = submissions.whole_number(request.args.get("days", "30"), 1, 366)
    if days is None:
        raise APIError(400, "invalid_request", "days must be a whole number from 1 to 366")
    return {"days": days, "usage": keys.usage(g.api_key.user, days)}


@bp.get("/models")
def models():
    settings = current().settings
    return {
        "default": settings.default_model,
        "models": [
            {
                "id": key,
                "description": settings.models[key].description,
                "file": settings.models[key].path.name,
                "chat_format": settings.models[key].chat_format,
                "system_prompt": settings.models[key].system_prompt,
                "n_ctx": settings.models[key].n_ctx,
                "params": settings.params_for(key).model_dump(),
                "queue_depth": progress.queue_depth(key),
                "workers": progress.live_workers(key),
                "sequences": progress.sequences_of(key),
            }
            for key in settings.offered_models
        ],
    }
