"""Running a job inside a worker, in an app context: the RQ entry point, and generation (or embedding) with the warm
model."""

import logging
import time

from redis import RedisError
from rq.timeouts import JobTimeoutException
from sqlalchemy import select

from app import affinity, embeddings, logs, metrics, streams
from app.extensions import current, db
from app.jobs.lifecycle import (QUEUE_WAIT_EXPIRED, claim, enqueue_next_turn, finish, hand_back, transition,
                                waited_too_long)
from app.jobs.queues import release_lines
from app.llm import ContextTooLong, ModelLoadError, Sequence, Turn, fit_prompt
from app.models import Job, JobKind, JobStatus, Priority, conversation_turns, utcnow

log = logging.getLogger(__name__)


def run(job_id: int) -> str:
    """RQ entry point. Never raises for a model problem: the job row records it instead."""
    app = current()
    if app.stopping.is_set():  # a slot of a stopping worker took it from Redis: back to the front, unclaimed
        app.worker_slots.hand_back(job_id)
        return "handed back"
    job = claim(job_id, app.worker_name)
    if job is not None and job.batch_id:
        release_lines(job.api_key_id)  # this key's next line takes the place this one leaves in the queue
    if job is not None:
        logs.request_id.set(job.request_id)
        log.info("job %s started on %s (attempt %s, model %s)", job.id, job.worker, job.attempts, job.model)
        status = (_embed if job.kind == JobKind.EMBEDDING.value else _generate)(job, job.attempts)
        log.info("job %s ended %s", job_id, status)
    elif transition(Job.id == job_id, Job.status == JobStatus.QUEUED.value, waited_too_long(),
                    processed_at=utcnow(), **QUEUE_WAIT_EXPIRED):
        streams.TokenWriter(current().redis, job_id, 1).finish(JobStatus.ERROR.value)
        status = JobStatus.ERROR.value
    else:
        return "skipped"
    enqueue_next_turn(db.session.get(Job, job_id), app.worker_name)
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
        sequence = Sequence(prompt.tokens, params, model.stop_strings(prompt.messages),
                            model.opening(job.system_prompt, prompt.tokens),
                            interactive=job.priority == Priority.INTERACTIVE.value)
        app.worker_slots.decodes(job.id, sequence)
        for piece in model.generate(sequence):
            if piece and not pieces:
                usage["first_token_ms"] = int((time.monotonic() - started) * 1000)
            if piece:
                pieces.append(piece)
            if writer.append(piece):
                status = JobStatus.CANCELLED
                break
            if app.stopping.is_set() or app.worker_slots.must_yield(job.id):
                status = JobStatus.QUEUED
                break
            if pieces and time.monotonic() > deadline:  # before any text, rq's own limit (JOB_TIMEOUT + 60 s)
                status, code = JobStatus.ERROR, "timeout"
                message = f"generation took longer than JOB_TIMEOUT ({settings.job_timeout} s); partial text kept"
                break
        writer.flush()  # the last tokens reach readers before the job's end is recorded
        metrics.count_restores(app.redis, job.model, int(sequence.restored > 0))
        if pieces:
            usage["completion_tokens"] = len(model.llm.tokenize("".join(pieces).encode(), add_bos=False))
    except Exception as exc:  # a model failure must end the job, not leave it processing
        status, code, message = _failure(job, exc, "generation")
        message += "; partial text kept" if code == "timeout" else ""
    if status == JobStatus.QUEUED:
        why = "the worker is stopping" if app.stopping.is_set() else "an interactive turn took its place"
        if hand_back(job, attempt, why):
            app.worker_slots.hand_back(job.id)
        return status.value
    usage["duration_ms"] = int((time.monotonic() - started) * 1000)
    return _record_end(job, attempt, writer, status, "".join(pieces), code, message, **usage)


def _embed(job: Job, attempt: int) -> str:
    """A vector per input with the model's embedding context (app/llm/embedding.py), the inputs longer than the
    context cut to it (the web process refused them where the request did not ask for that: app/embeddings.py).
    Its stream only carries the end, which the waiting request follows; a cancel is seen between inputs."""
    app = current()
    writer = streams.TokenWriter(app.redis, job.id, max_entries=64)
    writer.start(attempt)
    status, code, message, vectors, usage = JobStatus.DONE, None, None, [], {}
    started = time.monotonic()
    try:
        embedder = app.models.get(job.model).embedder
        inputs = [embedder.tokens(text)[: embedder.n_ctx] for text in embeddings.inputs_of(job)]
        usage["prompt_tokens"] = sum(map(len, inputs))
        vectors = embedder.embed(inputs, cancelled=lambda: writer.append(""))
        if vectors is None:
            status, vectors = JobStatus.CANCELLED, []
    except Exception as exc:  # a model failure must end the job, not leave it processing
        status, code, message = _failure(job, exc, "embedding")
    usage["duration_ms"] = int((time.monotonic() - started) * 1000)
    return _record_end(job, attempt, writer, status, embeddings.stored_vectors(vectors) if vectors else "", code,
                       message, shown=embeddings.summary(vectors), **usage)


def _record_end(job: Job, attempt: int, writer: streams.TokenWriter, status: JobStatus, result: str,
                code: str | None, message: str | None, **fields) -> str:
    """The job's end, stored, then on its stream. The worker first says it has a free slot (app/affinity.py): a
    client that sends the conversation's next turn the moment it sees this end then finds this worker, which holds
    the conversation's KV state, rather than the shared queue."""
    app = current()
    if not app.stopping.is_set():
        try:
            affinity.mark_idle(app.redis, app.worker_name)
        except RedisError:
            pass  # marked again once rq is done with the job (worker.py: after_job)
    finish(job, attempt, status, result, code, message, **fields)
    writer.finish(status.value)
    return status.value


def _failure(job: Job, exc: Exception, work: str) -> tuple[JobStatus, str, str]:
    """The error a job ends with when its `work` ("generation" or "embedding") raised: named for what we know,
    logged with its traceback for what we do not."""
    if isinstance(exc, ContextTooLong):
        return JobStatus.ERROR, "context_length_exceeded", str(exc)
    if isinstance(exc, ModelLoadError):
        return JobStatus.ERROR, "model_load_failed", str(exc)
    if isinstance(exc, JobTimeoutException):
        return JobStatus.ERROR, "timeout", "the job exceeded its hard time limit"
    log.exception("job %s failed", job.id)
    return JobStatus.ERROR, f"{work}_failed", f"{work} failed: {exc}"


def history(job: Job) -> list[Turn]:
    """What the model sees before the input, oldest first: the turns the client sent along, else the earlier
    completed chat turns of the job's conversation (an embedding job filed there shows a line in the chat, but its
    inputs and summary are no turn of it)."""
    if job.history is not None:
        return [Turn(user, assistant) for user, assistant in job.history]
    other_kinds = set(db.session.scalars(select(Job.id).where(
        Job.conversation_id == job.conversation_id, Job.id < job.id, Job.kind != JobKind.CHAT.value)))
    return [turn for turn in conversation_turns(job.conversation_id, before_job_id=job.id)
            if turn.complete and turn.job_id not in other_kinds]
