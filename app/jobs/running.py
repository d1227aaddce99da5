"""Running a job inside a worker, in an app context: the RQ entry point, and generation with the warm model."""

import logging
import time

from rq.timeouts import JobTimeoutException

from app import logs, metrics, streams
from app.extensions import current, db
from app.jobs.lifecycle import (QUEUE_WAIT_EXPIRED, claim, enqueue_next_turn, finish, requeue, transition,
                                waited_too_long)
from app.jobs.queues import release_lines
from app.llm import ContextTooLong, ModelLoadError, Turn, fit_prompt
from app.models import Job, JobStatus, conversation_turns, utcnow

log = logging.getLogger(__name__)


def run(job_id: int) -> str:
    """RQ entry point. Never raises for a model problem: the job row records it instead."""
    job = claim(job_id, current().worker_name)
    if job is not None and job.batch_id:
        release_lines(job.api_key_id)  # this key's next line takes the place this one leaves in the queue
    if job is not None:
        logs.request_id.set(job.request_id)
        log.info("job %s started on %s (attempt %s, model %s)", job.id, job.worker, job.attempts, job.model)
        status = _generate(job, job.attempts)
        log.info("job %s ended %s", job_id, status)
    elif transition(Job.id == job_id, Job.status == JobStatus.QUEUED.value, waited_too_long(),
                    processed_at=utcnow(), **QUEUE_WAIT_EXPIRED):
        streams.TokenWriter(current().redis, job_id, 1).finish(JobStatus.ERROR.value)
        status = JobStatus.ERROR.value
    else:
        return "skipped"
    enqueue_next_turn(db.session.get(Job, job_id), current().worker_name)
    return status


def _generate(job: Job, attempt: int) -> str:
    app = current()
    settings = app.settings
    params = settings.params_for(job.model, job.params)
    writer = streams.TokenWriter(app.redis, job.id, max_entries=params.max_tokens + 64)
    writer.start(attempt)
    pieces: list[str] = []
    status, code, message, usage = JobStatus.DONE, None, None, {}
    started = time.monotonic()
    deadline = started + settings.job_timeout
    try:
        model = app.models.get(job.model)
        prompt = fit_prompt(model, job.system_prompt, history(job), job.user_input, params.max_tokens,
                            settings.safety_margin)
        usage["prompt_tokens"] = len(prompt.tokens)
        opening, restores = model.opening(job.system_prompt, prompt.tokens), model.restores
        for piece in model.generate(prompt.tokens, params, model.stop_strings(prompt.messages), opening):
            if not pieces:
                usage["first_token_ms"] = int((time.monotonic() - started) * 1000)
            pieces.append(piece)
            if writer.append(piece):
                status = JobStatus.CANCELLED
                break
            if app.stopping.is_set():
                status = JobStatus.QUEUED
                break
            if time.monotonic() > deadline:
                status, code = JobStatus.ERROR, "timeout"
                message = f"generation took longer than JOB_TIMEOUT ({settings.job_timeout} s); partial text kept"
                break
        writer.flush()  # the last tokens reach readers before the job's end is recorded
        metrics.count_restores(app.redis, job.model, model.restores - restores)
        if pieces:
            usage["completion_tokens"] = len(model.llm.tokenize("".join(pieces).encode(), add_bos=False))
    except ContextTooLong as exc:
        status, code, message = JobStatus.ERROR, "context_length_exceeded", str(exc)
    except ModelLoadError as exc:
        status, code, message = JobStatus.ERROR, "model_load_failed", str(exc)
    except JobTimeoutException:
        status, code, message = JobStatus.ERROR, "timeout", "the job exceeded its hard time limit; partial text kept"
    except Exception as exc:  # a model failure must end the job, not leave it processing
        log.exception("job %s failed", job.id)
        status, code, message = JobStatus.ERROR, "generation_failed", f"generation failed: {exc}"
    if status == JobStatus.QUEUED:
        requeue(job, attempt)
        return status.value
    usage["duration_ms"] = int((time.monotonic() - started) * 1000)
    finish(job, attempt, status, "".join(pieces), code, message, **usage)
    writer.finish(status.value)
    if code is None:
        model.keep_state()
    return status.value


def history(job: Job) -> list[Turn]:
    """What the model sees before the input, oldest first: the turns the client sent along, else the earlier
    completed turns of the job's conversation."""
    if job.history is not None:
        return [Turn(user, assistant) for user, assistant in job.history]
    return [turn for turn in conversation_turns(job.conversation_id, before_job_id=job.id) if turn.complete]
