"""The job as the JSON API, its Server-Sent Events and webhooks show it."""

from datetime import timedelta

from app import progress
from app.models import Job, JobStatus, iso


def job_json(job: Job, known: progress.Progress | None = None) -> dict:
    """The job as the JSON API and webhooks show it; `known` comes from `progress.of` when many are shown at once."""
    seen = known or progress.of([job])[job.id]
    finished = job.finished
    return {
        "id": job.id,
        "conversation_id": job.conversation.session_id,
        "user_input": job.user_input,
        "model": job.model,
        "system_prompt": job.system_prompt,
        "prompt_template": job.prompt_template.ref if job.prompt_template else None,
        "variables": job.prompt_variables,
        "params": job.params,
        "status": job.status,
        "result": seen.partial if job.status == JobStatus.PROCESSING.value else job.result,
        "error": {"code": job.error_code, "message": job.error} if job.error_code else None,
        "priority": job.priority,
        "attempts": job.attempts,
        "request_id": job.request_id,
        "queue_position": seen.position,
        "eta_seconds": seen.eta_seconds,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "processed_at": iso(job.processed_at),
        "usage": {
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": job.completion_tokens,
            "first_token_ms": job.first_token_ms,
            "duration_ms": _millis(job.started_at, job.processed_at) if finished and job.started_at else None,
        },
        "callback": None if not job.callback_url else {
            "url": job.callback_url, "status": job.callback_status, "attempts": job.callback_attempts,
            "last_status": job.callback_last_status, "last_error": job.callback_error,
        },
    }


def _millis(start, end) -> int:
    """Between the two times as they are shown (to the millisecond), so the figure is their difference: an exported
    job imported again shows the same duration (app/conversation_files.py)."""
    start, end = (moment.replace(microsecond=moment.microsecond // 1000 * 1000) for moment in (start, end))
    return (end - start) // timedelta(milliseconds=1)