"""The job as the JSON API, its Server-Sent Events and webhooks show it, and a poll's read of one job for it."""

from datetime import timedelta

from sqlalchemy import Row, bindparam, select

from app import places, progress
from app.extensions import current, db
from app.models import Conversation, Job, JobStatus, PromptTemplate, iso, template_ref


def job_json(job: Job, known: progress.Progress | None = None) -> dict:
    """The job as the JSON API and webhooks show it; `known` comes from `progress.of` when many are shown at once."""
    template = job.prompt_template.ref if job.prompt_template else None
    return _shown(job, job.conversation.session_id, template, known)


# What `_shown` reads of a job: the names of both a Job's attributes and the columns of `_OWNED`'s row.
_SHOWN = ("id", "kind", "user_input", "model", "system_prompt", "prompt_variables", "params", "status", "result", "error",
          "error_code", "priority", "attempts", "request_id", "created_at", "started_at", "processed_at",
          "prompt_tokens", "completion_tokens", "first_token_ms", "callback_url", "callback_status",
          "callback_attempts", "callback_last_status", "callback_error")
# Built once, in Core: a poll asks for one job many times a second, and loading it as an ORM object (with its
# conversation joined) cost a third of a poll, twice what this costs (docs/benchmarks.md, the web tier).
_JOBS, _CONVERSATIONS, _TEMPLATES = Job.__table__, Conversation.__table__, PromptTemplate.__table__
_OWNED = (select(*(_JOBS.c[name] for name in _SHOWN), _CONVERSATIONS.c.session_id,
                 _TEMPLATES.c.name.label("template_name"), _TEMPLATES.c.version.label("template_version"),
                 *places.place_in_line(_JOBS))
          .join_from(_JOBS, _CONVERSATIONS, _JOBS.c.conversation_id == _CONVERSATIONS.c.id)
          .outerjoin(_TEMPLATES, _JOBS.c.prompt_template_id == _TEMPLATES.c.id)
          .where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.user_id == bindparam("owner")))


def owned_job_json(job_id: int, owner: int) -> dict | None:
    """`job_json` of the owner's job `job_id`, read in one statement with its place in line; None if the owner has no
    such job."""
    snapshot = current().snapshots.now()
    row = db.session.connection().execute(
        _OWNED, {"job_id": job_id, "owner": owner, **places.snapshot_parameters(snapshot)}).one_or_none()
    if row is None:
        return None
    template = template_ref(row.template_name, row.template_version) if row.template_name is not None else None
    place = snapshot.place(row)
    return _shown(row, row.session_id, template, progress.in_line(row.model, place) if place else None)


def _shown(job: Job | Row, session_id: str, template: str | None, known: progress.Progress | None) -> dict:
    seen = known or progress.of([job])[job.id]
    finished = JobStatus(job.status).finished
    return {
        "id": job.id,
        "kind": job.kind,
        "conversation_id": session_id,
        "user_input": job.user_input,
        "model": job.model,
        "system_prompt": job.system_prompt,
        "prompt_template": template,
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
            # an imported job may have ended without saying when (app/conversation_files.py)
            "duration_ms": (_millis(job.started_at, job.processed_at)
                            if finished and job.started_at and job.processed_at else None),
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