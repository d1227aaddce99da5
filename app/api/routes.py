"""JSON routes: the contract in docs/api.md."""

from flask import g, request, url_for
from sqlalchemy import select

from app import jobs, submissions
from app.api import bp
from app.api.schemas import SubmitRequest, parse
from app.errors import APIError
from app.extensions import current, db
from app.models import Conversation, Job, JobStatus, Message, Priority

# A refusal's HTTP status; the rest are the client's to fix (400).
REFUSAL_STATUS = {"model_unavailable": 503}


def job_json(job: Job, progress: jobs.Progress | None = None) -> dict:
    """The job as the API shows it; `progress` comes from `jobs.progress` when many jobs are shown at once."""
    progress = progress or jobs.progress([job])[job.id]
    finished = job.finished
    return {
        "id": job.id,
        "conversation_id": job.conversation_id,
        "user_input": job.user_input,
        "model": job.model,
        "system_prompt": job.system_prompt,
        "params": job.params,
        "status": job.status,
        "result": progress.partial if job.status == JobStatus.PROCESSING.value else job.result,
        "error": {"code": job.error_code, "message": job.error} if job.error_code else None,
        "priority": job.priority,
        "attempts": job.attempts,
        "queue_position": progress.position,
        "eta_seconds": progress.eta_seconds,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "processed_at": _iso(job.processed_at),
        "usage": {
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": job.completion_tokens,
            "first_token_ms": job.first_token_ms,
            "duration_ms": _millis(job.processed_at - job.started_at) if finished and job.started_at else None,
        },
    }


def _iso(moment) -> str | None:
    return moment.isoformat(timespec="milliseconds") + "Z" if moment else None


def _millis(delta) -> int:
    return int(delta.total_seconds() * 1000)


def get_job(job_id: int) -> Job:
    job = db.session.get(Job, job_id)
    if job is None:
        raise APIError(404, "not_found", f"no job with id {job_id}")
    return job


@bp.post("/submit")
def submit():
    body = parse(SubmitRequest, request.get_json(force=True, silent=True))
    priority = body.priority or Priority.BATCH.value
    if priority == Priority.INTERACTIVE.value and not g.api_key.interactive:
        raise APIError(403, "priority_not_allowed", "this API key may only submit batch jobs")
    overrides = body.overrides()
    try:
        model, system_prompt = submissions.check(body.model, body.system_prompt, body.user_input, overrides)
    except submissions.Refused as refused:
        raise APIError(REFUSAL_STATUS.get(refused.code, 400), refused.code, refused.message) from None
    job = jobs.submit(body.conversation_id(), body.user_input, model, system_prompt, overrides,
                      priority=priority, api_key_id=g.api_key.id)
    return {"job_id": job.id, **job_json(job)}, 202, {"Location": url_for("api.job", job_id=job.id)}


@bp.get("/jobs/<int:job_id>")
def job(job_id: int):
    return job_json(get_job(job_id))


@bp.get("/jobs")
def list_jobs():
    query = select(Job).order_by(Job.id.desc())
    if conversation_id := request.args.get("conversation_id"):
        query = query.where(Job.conversation_id == conversation_id)
    if status := request.args.get("status"):
        if status not in {s.value for s in JobStatus}:
            raise APIError(400, "invalid_request", f"status must be one of: {', '.join(s.value for s in JobStatus)}")
        query = query.where(Job.status == status)
    limit = request.args.get("limit", "50")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise APIError(400, "invalid_request", "limit must be a whole number from 1 to 1000")
    found = db.session.scalars(query.limit(int(limit))).all()
    progress = jobs.progress(found)
    return {"jobs": [job_json(job, progress[job.id]) for job in found]}


@bp.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int):
    try:
        return job_json(jobs.cancel(get_job(job_id)))
    except jobs.AlreadyFinished as exc:
        raise APIError(409, "job_finished", str(exc)) from None


@bp.get("/status/<conversation_id>")
def status(conversation_id: str):
    if db.session.get(Conversation, conversation_id) is None:
        raise APIError(404, "not_found", f"no conversation with id '{conversation_id}'")
    last = db.session.scalar(
        select(Message.content)
        .where(Message.conversation_id == conversation_id, Message.role == "assistant")
        .order_by(Message.job_id.desc(), Message.id.desc()).limit(1)
    )
    return {"conversation_id": conversation_id, "response": last}


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
                "queue_depth": jobs.queue_depth(key),
                "workers": jobs.live_workers(key),
            }
            for key in settings.offered_models
        ],
    }
