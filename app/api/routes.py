"""JSON routes: the contract in docs/api.md."""

from flask import current_app, g, request, url_for
from sqlalchemy import select

from app import jobs
from app.api import bp
from app.api.schemas import SubmitRequest, parse
from app.errors import APIError
from app.extensions import db
from app.llm import ContextTooLong, ModelCache, ModelLoadError, fit_prompt
from app.models import Conversation, Job, JobStatus, Message, Priority


def job_json(job: Job) -> dict:
    finished = job.finished
    position = jobs.queue_position(job)
    result = job.result
    if job.status == JobStatus.PROCESSING.value:
        result = jobs.partial_result(job)
    return {
        "id": job.id,
        "conversation_id": job.conversation_id,
        "user_input": job.user_input,
        "model": job.model,
        "system_prompt": job.system_prompt,
        "params": job.params,
        "status": job.status,
        "result": result,
        "error": {"code": job.error_code, "message": job.error} if job.error_code else None,
        "priority": job.priority,
        "attempts": job.attempts,
        "queue_position": position,
        "eta_seconds": jobs.eta_seconds(job, position),
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
    settings = jobs.settings()
    model = body.model or settings.default_model
    if model not in settings.offered_models:
        raise APIError(400, "unknown_model", f"unknown model '{model}'; available: {', '.join(settings.offered_models)}")
    priority = body.priority or Priority.BATCH.value
    if priority == Priority.INTERACTIVE.value and not g.api_key.interactive:
        raise APIError(403, "priority_not_allowed", "this API key may only submit batch jobs")
    overrides = body.overrides()
    check_fits(model, body.system_prompt, body.user_input, overrides)
    job = jobs.submit(body.conversation_id(), body.user_input, model, body.system_prompt, overrides,
                      priority=priority, api_key_id=g.api_key.id)
    return {"job_id": job.id, **job_json(job)}, 202, {"Location": url_for("api.job", job_id=job.id)}


def check_fits(model: str, system_prompt: str | None, user_input: str, overrides: dict) -> None:
    """Reject at once an input that cannot fit the model's context even without history."""
    settings = jobs.settings()
    tokenizers: ModelCache = current_app.extensions["tokenizers"]
    max_tokens = settings.params_for(model, overrides).max_tokens
    try:
        fit_prompt(tokenizers.get(model), system_prompt, [], user_input, max_tokens, settings.safety_margin)
    except ContextTooLong as exc:
        raise APIError(400, "context_length_exceeded", str(exc)) from None
    except ModelLoadError as exc:
        raise APIError(503, "model_unavailable", str(exc)) from None


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
    return {"jobs": [job_json(job) for job in db.session.scalars(query.limit(int(limit)))]}


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
    settings = jobs.settings()
    return {
        "default": settings.default_model,
        "models": [
            {
                "id": key,
                "file": settings.models[key].path.name,
                "chat_format": settings.models[key].chat_format,
                "n_ctx": settings.models[key].n_ctx,
                "params": settings.params_for(key).model_dump(),
                "queue_depth": jobs.queue_depth(key),
                "workers": jobs.live_workers(key),
            }
            for key in settings.offered_models
        ],
    }
