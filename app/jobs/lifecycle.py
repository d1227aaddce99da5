"""A job's status, from submit to its end: every change goes through `transition` (a conditional UPDATE, so
duplicate deliveries and late workers change nothing): submit, regenerate, claim, finish, hand_back, cancel.

The database row is the truth and Redis is the transport: a row is committed before it is enqueued, and the
reconciler (app/jobs/reconciler.py) repairs whatever Redis lost. No status changes but through `transition`: the
few changes made elsewhere (the reconciler's retries and expiry, a run that waited too long, a cancelled batch's held
lines) call it too."""

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from redis import RedisError
from sqlalchemy import ColumnElement, and_, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from app import streams, submissions, webhooks
from app.extensions import current, db
from app.jobs.queues import enqueue, forget_queued
from app.jobs.store import ensure_conversation, insert_job, new_conversation_id, one_writer, title, written
from app.models import Conversation, Job, JobKind, JobStatus, Message, Priority, PromptTemplate, utcnow

log = logging.getLogger(__name__)

QUEUE_WAIT_EXPIRED = dict(status=JobStatus.ERROR.value, error_code="timeout",
                          error="the job waited longer than MAX_QUEUE_WAIT in the queue")


def transition(*where: ColumnElement[bool], also: Callable[[], None] | None = None, **values) -> int:
    """The one way a job's status changes: a conditional UPDATE of the rows matching `where`, committed together
    with `also` (run only when a row changed). Returns how many rows changed."""
    changed = db.session.execute(
        update(Job).where(*where).values(**values).execution_options(synchronize_session=False)
    ).rowcount
    if changed and also:
        also()
    db.session.commit()
    return changed


def owned(job_id: int, attempt: int) -> tuple[ColumnElement[bool], ...]:
    """Only the attempt that is running a job may change it."""
    return Job.id == job_id, Job.status == JobStatus.PROCESSING.value, Job.attempts == attempt


def waited_too_long() -> ColumnElement[bool]:
    """A batch's lines wait as long as its completion window allows instead (app/batches.py)."""
    oldest = utcnow() - timedelta(seconds=current().settings.max_queue_wait)
    return and_(Job.batch_id.is_(None), Job.created_at < oldest)


class AlreadySubmitted(Exception):
    """A concurrent request with the same Idempotency-Key made the job first."""


def submit(owner: int, session_id: str, user_input: str, model: str, system_prompt: str | None, params: dict,
           priority: str = Priority.BATCH.value, api_key_id: int | None = None,
           conversation_id: str | None = None, history: list[list[str | None]] | None = None,
           idempotency: tuple[str, str] | None = None, callback_url: str | None = None,
           prompt_template: PromptTemplate | None = None, variables: dict[str, str] | None = None,
           kind: str = JobKind.CHAT.value) -> Job:
    """Commit the job and its user message in the owner's conversation `session_id` (made if new, with the internal
    id `conversation_id` if given), then enqueue. `history` ([user, assistant] pairs) replaces the conversation's
    stored turns in the prompt; `idempotency` is the request's (Idempotency-Key, digest); `callback_url` gets the
    job's JSON when it ends (app/webhooks.py); `prompt_template` and `variables` are what the system prompt was
    filled from; `kind` what it computes (app/models.py: JobKind). A key's submits are refused over its cap on waiting jobs
    (submissions.claim_queue_room). If Redis is down the job is still accepted: the reconciler enqueues it when Redis
    is back."""
    extra = dict(zip(("idempotency_key", "request_digest"), idempotency or ()), kind=kind)
    if prompt_template:
        extra.update(prompt_template_id=prompt_template.id, prompt_variables=variables)
    if callback_url:
        extra.update(callback_url=callback_url, callback_status=webhooks.PENDING)
    try:
        with one_writer():
            if api_key_id is not None:
                submissions.claim_queue_room(api_key_id)
            made = new_conversation_id() if conversation_id is None else None
            conversation_id = ensure_conversation(owner, session_id, title(user_input), conversation_id or made)
            values = insert_job(conversation_id, user_input, model, system_prompt, params, priority, api_key_id,
                                owner, history, **extra)
            db.session.commit()
    except IntegrityError:
        db.session.rollback()
        if idempotency:
            raise AlreadySubmitted() from None
        raise
    job = written(values)
    # The upsert kept the id made here: the conversation is new, and no worker holds an earlier turn's state.
    enqueue(job, first_turn=conversation_id == made)
    return job


class NotRegenerable(Exception):
    pass


def regenerate(job: Job) -> Job:
    """A new job for the same turn: it takes over the turn's messages (the old answer leaves the conversation and
    the history the next turn sees), while the old job, with its result, stays on the jobs page."""
    latest = db.session.scalar(select(func.max(Job.id)).where(Job.conversation_id == job.conversation_id))
    if not job.finished or job.id != latest:
        raise NotRegenerable("only the conversation's last answer can be regenerated, once it has ended")
    if job.model not in current().settings.offered_models:  # an imported turn's, say: no worker would take it
        raise NotRegenerable(f"the model '{job.model}' is not offered here")
    db.session.execute(delete(Message).where(Message.job_id == job.id))
    values = insert_job(job.conversation_id, job.user_input, job.model, job.system_prompt, job.params, job.priority,
                        job.api_key_id, job.user_id, job.history, prompt_template_id=job.prompt_template_id,
                        prompt_variables=job.prompt_variables)
    db.session.commit()
    again = written(values)
    enqueue(again)
    return again


_OTHER = aliased(Job)  # another job, in correlated subqueries; made once: an alias costs more than its query
_UNFINISHED_BEFORE = (
    select(_OTHER.id)
    .where(_OTHER.conversation_id == Job.conversation_id, _OTHER.id < Job.id,
           _OTHER.status.in_([JobStatus.QUEUED.value, JobStatus.PROCESSING.value]))
    .exists()
)


def claim(job_id: int, worker: str) -> Job | None:
    """queued -> processing, unless an earlier turn of the same conversation has not finished yet (then the job
    stays queued, and that turn's end enqueues it again) or it waited too long (then `run` ends it)."""
    now = utcnow()
    claimed = transition(Job.id == job_id, Job.status == JobStatus.QUEUED.value, ~_UNFINISHED_BEFORE,
                         ~waited_too_long(), status=JobStatus.PROCESSING.value, attempts=Job.attempts + 1,
                         worker=worker, started_at=now, heartbeat_at=now, retry_at=None)
    return db.session.get(Job, job_id) if claimed else None


def hand_back(job: Job, attempt: int, why: str) -> bool:
    """Give the running job back to the queue (the worker is stopping, or the job gave its place up to an
    interactive turn); an attempt cut short this way is not counted. The worker pushes it to the front of its queue
    once rq is done with this run (worker.py: pushed during the run, the run's end would mark the new entry
    finished, and the reconciler would enqueue the job a second time)."""
    if transition(*owned(job.id, attempt), status=JobStatus.QUEUED.value, attempts=attempt - 1, worker=None):
        log.info("job %s handed back to the queue: %s", job.id, why)
        return True
    return False


def finish(job: Job, attempt: int, status: JobStatus, text: str, code: str | None, message: str | None,
           shown: str | None = None, **usage) -> None:
    """Record the outcome once, with the answer message in the same commit: only the attempt that owns the row
    may finish it, so a retried job never stores its answer twice. `shown` is the message's text when it is not the
    result (an embedding job's vectors are summed up in a line, app/embeddings.py)."""

    def store_answer() -> None:
        if text or status == JobStatus.DONE:
            db.session.add(Message(conversation_id=job.conversation_id, role="assistant",
                                   content=text if shown is None else shown, job_id=job.id))
            db.session.execute(update(Conversation).where(Conversation.id == job.conversation_id)
                               .values(updated_at=utcnow()))

    if not transition(*owned(job.id, attempt), also=store_answer, status=status.value, result=text, error=message,
                      error_code=code, processed_at=utcnow(), **usage):
        log.warning("job %s attempt %s finished after losing ownership; outcome discarded", job.id, attempt)
    elif job.callback_url:
        webhooks.enqueue(db.session.get(Job, job.id))


def enqueue_next_turn(job: Job, worker: str | None = None) -> None:
    """Enqueue the conversation's next queued turn; `worker`, ending this turn, keeps the next one of its model."""
    following = db.session.scalar(
        select(Job).where(Job.conversation_id == job.conversation_id, Job.id > job.id,
                          Job.status == JobStatus.QUEUED.value).order_by(Job.id).limit(1)
    )
    if following is not None:
        enqueue(following, worker=worker if following.model == job.model else None)


class AlreadyFinished(Exception):
    pass


class QueueUnavailable(Exception):
    """Redis cannot be reached, so a running job cannot be told to stop right now."""


def cancel(job: Job, wait_seconds: float = 3.0) -> Job:
    """A queued job is cancelled at once; a running one is flagged and stops within a token.
    Waits briefly for the worker so the answer usually shows the final state."""
    if job.finished:
        raise AlreadyFinished(f"job {job.id} has already ended as '{job.status}'")
    if transition(Job.id == job.id, Job.status == JobStatus.QUEUED.value,
                  status=JobStatus.CANCELLED.value, processed_at=utcnow(), result="", held=False):
        forget_queued(job)
        streams.TokenWriter(current().redis, job.id, 1).finish(JobStatus.CANCELLED.value)
        enqueue_next_turn(job)
        if job.callback_url:
            webhooks.enqueue(db.session.get(Job, job.id))
    else:
        try:
            streams.request_cancel(current().redis, job.id)
        except RedisError as exc:
            raise QueueUnavailable("Redis cannot be reached to stop the running job; try again in a moment") from exc
        _wait_until_finished(job, wait_seconds)
    db.session.refresh(job)
    return job


def _wait_until_finished(job: Job, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        db.session.commit()  # end the read transaction so the next one sees the worker's write
        if JobStatus(db.session.scalar(select(Job.status).where(Job.id == job.id))).finished:
            return
        time.sleep(0.05)
