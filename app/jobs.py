"""The job lifecycle: submit, regenerate, import, enqueue, run (the RQ entry point), cancel, heartbeat, reconcile.

The database row is the truth and Redis is the transport: a row is committed before it is enqueued,
every status change goes through `_transition` (a conditional UPDATE, so duplicate deliveries and late
workers change nothing), and `reconcile` repairs whatever Redis lost. Status changes happen here and nowhere else.
"""

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import timedelta

from redis import RedisError
from rq import Queue
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.timeouts import JobTimeoutException
from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from app import affinity, logs, metrics, progress, streams, submissions, webhooks
from app.extensions import current, db
from app.llm import ContextTooLong, ModelLoadError, Turn, fit_prompt
from app.models import (Batch, Conversation, Job, JobStatus, Message, Priority, PromptTemplate, conversation_turns,
                        utcnow)

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 5  # seconds between a worker's heartbeats for its running job
HEARTBEAT_STALE = 20  # a processing job without a heartbeat for this long has lost its worker
RETRY_BACKOFF = 2  # seconds before the first retry; doubles with every attempt
# A queued row whose RQ job is "started" was popped by a worker that died (or is claiming it right now:
# the duplicate that re-enqueuing then makes is skipped by the claim), so only these count as waiting.
WAITING_IN_REDIS = {RQStatus.QUEUED, RQStatus.DEFERRED, RQStatus.SCHEDULED}
QUEUE_WAIT_EXPIRED = dict(status=JobStatus.ERROR.value, error_code="timeout",
                          error="the job waited longer than MAX_QUEUE_WAIT in the queue")


def queue_name(model: str, priority: str) -> str:
    return f"llamalith:{model}:{priority}"


def worker_queues(models: list[str], connection) -> list[Queue]:
    """Interactive queues first: a worker always prefers them (aged batch jobs are moved there)."""
    return [
        Queue(queue_name(model, priority.value), connection=connection)
        for priority in (Priority.INTERACTIVE, Priority.BATCH)
        for model in models
    ]


RQ_PREFIX = "llamalith-"


def rq_id(job_id: int) -> str:
    return f"{RQ_PREFIX}{job_id}"


def job_id_of(rq_job_id: str | bytes) -> int:
    text = rq_job_id.decode() if isinstance(rq_job_id, bytes) else rq_job_id
    return int(text.removeprefix(RQ_PREFIX))


# The rules every status change and every queue order share -------------------------------------------


def _transition(*where: ColumnElement[bool], also: Callable[[], None] | None = None, **values) -> int:
    """The one way a job's status changes: a conditional UPDATE of the rows matching `where`, committed together
    with `also` (run only when a row changed). Returns how many rows changed."""
    changed = db.session.execute(
        update(Job).where(*where).values(**values).execution_options(synchronize_session=False)
    ).rowcount
    if changed and also:
        also()
    db.session.commit()
    return changed


def _owned(job_id: int, attempt: int) -> tuple[ColumnElement[bool], ...]:
    """Only the attempt that is running a job may change it."""
    return Job.id == job_id, Job.status == JobStatus.PROCESSING.value, Job.attempts == attempt


def _waited_too_long() -> ColumnElement[bool]:
    """A batch's lines wait as long as its completion window allows instead (app/batches.py)."""
    oldest = utcnow() - timedelta(seconds=current().settings.max_queue_wait)
    return and_(Job.batch_id.is_(None), Job.created_at < oldest)


# Submitting ----------------------------------------------------------------------------------------


class AlreadySubmitted(Exception):
    """A concurrent request with the same Idempotency-Key made the job first."""


def submit(owner: int, session_id: str, user_input: str, model: str, system_prompt: str | None, params: dict,
           priority: str = Priority.BATCH.value, api_key_id: int | None = None,
           conversation_id: str | None = None, history: list[list[str | None]] | None = None,
           idempotency: tuple[str, str] | None = None, callback_url: str | None = None,
           prompt_template: PromptTemplate | None = None, variables: dict[str, str] | None = None) -> Job:
    """Commit the job and its user message in the owner's conversation `session_id` (made if new, with the internal
    id `conversation_id` if given), then enqueue. `history` ([user, assistant] pairs) replaces the conversation's
    stored turns in the prompt; `idempotency` is the request's (Idempotency-Key, digest); `callback_url` gets the
    job's JSON when it ends (app/webhooks.py); `prompt_template` and `variables` are what the system prompt was
    filled from. A key's submits are refused over its cap on waiting jobs
    (submissions.claim_queue_room). If Redis is down the job is still accepted: the reconciler enqueues it when Redis
    is back."""
    extra = dict(zip(("idempotency_key", "request_digest"), idempotency or ()))
    if prompt_template:
        extra.update(prompt_template_id=prompt_template.id, prompt_variables=variables)
    if callback_url:
        extra.update(callback_url=callback_url, callback_status=webhooks.PENDING)
    try:
        with _one_writer():
            if api_key_id is not None:
                submissions.claim_queue_room(api_key_id)
            conversation_id = _ensure_conversation(owner, session_id, _title(user_input), conversation_id)
            job = _add_job(conversation_id, user_input, model, system_prompt, params, priority, api_key_id, owner,
                           history, **extra)
            db.session.commit()
    except IntegrityError:
        db.session.rollback()
        if idempotency:
            raise AlreadySubmitted() from None
        raise
    enqueue(job)
    return job


_SQLITE_WRITER = threading.Lock()


def _one_writer():
    """SQLite lets one writer in at a time and the others sleep and retry, in no order: under load some submits
    waited over a second. This process's writers queue here instead, in turn. (PostgreSQL needs no such thing.)"""
    return _SQLITE_WRITER if db.session.get_bind().dialect.name == "sqlite" else nullcontext()


@contextmanager
def in_turn() -> Iterator[None]:
    """One short write transaction of a long series (a batch file's lines, an imported conversation's turns) as
    `_one_writer`; after it the series pauses as long as it took, so that other writers, this process's and the
    others', get the database at least half the time."""
    began = time.monotonic()
    with _one_writer():
        yield
    time.sleep(time.monotonic() - began)


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
    again = _add_job(job.conversation_id, job.user_input, job.model, job.system_prompt, job.params, job.priority,
                     job.api_key_id, job.user_id, job.history, prompt_template_id=job.prompt_template_id,
                     prompt_variables=job.prompt_variables)
    db.session.commit()
    enqueue(again)
    return again


def _add_job(conversation_id: str, user_input: str, model: str, system_prompt: str | None, params: dict,
             priority: str, api_key_id: int | None, user_id: int | None, history: list | None = None,
             **extra) -> Job:
    job = Job(conversation_id=conversation_id, user_input=user_input, model=model, system_prompt=system_prompt,
              params=params, priority=priority, api_key_id=api_key_id, user_id=user_id, history=history,
              request_id=logs.request_id.get(), **extra)
    db.session.add(job)
    db.session.flush()
    db.session.add(Message(conversation_id=conversation_id, role="user", content=user_input, job_id=job.id))
    return job


def _ensure_conversation(owner: int, session_id: str, title: str, conversation_id: str | None) -> str:
    """The internal id of the owner's conversation `session_id`, made if new: an upsert, because two first turns
    may arrive at once."""
    insert = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}[db.session.get_bind().dialect.name]
    now = utcnow()
    upsert = insert(Conversation).values(id=conversation_id or secrets.token_hex(8), session_id=session_id,
                                         title=title, user_id=owner, created_at=now, updated_at=now)
    return db.session.scalar(upsert.on_conflict_do_update(index_elements=["user_id", "session_id"],
                                                          set_={"updated_at": now}).returning(Conversation.id))


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 80 else line[:79] + "…"


class ConversationExists(Exception):
    """The owner already has a conversation with this id."""


IMPORT_CHUNK = 1000  # turns written per transaction
IMPORTING = "importing-"  # the session id of a conversation being imported: importing-<epoch seconds>-<its id>
UNFINISHED_IMPORT = timedelta(minutes=10)  # one still being imported this long lost its request


def add_ended(conversation: Conversation, turns: list[tuple[dict | None, str | None, str | None]]) -> None:
    """Store a conversation whose turns all ended elsewhere (an imported file), and enqueue nothing. Each turn is
    (its finished job's columns, the user's message, the answer), in order: a turn's place is its job's id. A turn
    without a job is a message kept without one. Raises ConversationExists, storing nothing, when the owner already
    has a conversation with its session id.

    10,000 turns in one transaction held SQLite (one writer at a time) for seconds, so the turns are written
    IMPORT_CHUNK at a time (`in_turn`) into a conversation nobody owns yet, under a placeholder id; one last short
    transaction gives it its owner and id. A crash half-way leaves only the placeholder, which the reconciler
    removes (`remove_unfinished_imports`)."""
    owner, session_id = conversation.user_id, conversation.session_id
    if db.session.scalar(select(Conversation.id).where(Conversation.user_id == owner,
                                                       Conversation.session_id == session_id)):
        raise ConversationExists(f"there is already a conversation '{session_id}'")
    conversation.id = secrets.token_hex(8)
    conversation.user_id, conversation.session_id = None, f"{IMPORTING}{int(time.time())}-{conversation.id}"
    request_id = logs.request_id.get()
    try:
        with in_turn():
            db.session.add(conversation)
            db.session.commit()
        for start in range(0, len(turns), IMPORT_CHUNK):
            with in_turn():
                _add_turns(conversation.id, turns[start:start + IMPORT_CHUNK], request_id)
                db.session.commit()
        with in_turn():
            db.session.execute(update(Job).where(Job.conversation_id == conversation.id).values(user_id=owner))
            conversation.user_id, conversation.session_id = owner, session_id
            db.session.commit()
    except BaseException as failed:
        db.session.rollback()
        _remove_conversations([conversation.id])
        if isinstance(failed, IntegrityError):  # the same id was made meanwhile
            raise ConversationExists(f"there is already a conversation '{session_id}'") from None
        raise


def _add_turns(conversation_id: str, turns: list[tuple[dict | None, str | None, str | None]],
               request_id: str | None) -> None:
    job_ids = iter(_insert_jobs([{**job, "conversation_id": conversation_id, "request_id": request_id}
                                 for job, _, _ in turns if job is not None]))
    messages = []
    for job, user, assistant in turns:
        job_id = next(job_ids) if job is not None else None
        messages += [{"conversation_id": conversation_id, "role": role, "content": text, "job_id": job_id}
                     for role, text in (("user", user), ("assistant", assistant)) if text is not None]
    _insert_messages(messages)


def remove_unfinished_imports() -> int:
    """Remove the conversations an import began and did not finish (its request died) UNFINISHED_IMPORT ago, with
    what it wrote of them. Returns how many."""
    before = time.time() - UNFINISHED_IMPORT.total_seconds()
    unfinished = [conversation_id for conversation_id, session_id in db.session.execute(
        select(Conversation.id, Conversation.session_id).where(Conversation.user_id.is_(None),
                                                               Conversation.session_id.startswith(IMPORTING)))
        if int(session_id.split("-")[1]) < before]
    _remove_conversations(unfinished)
    return len(unfinished)


def _remove_conversations(conversation_ids: list[str]) -> None:
    """With their jobs and messages, deleted outright rather than left to ON DELETE CASCADE (which SQLite applies
    only where the connection turned foreign keys on, and did not in tests)."""
    for table in (Message, Job, Conversation):
        column = table.id if table is Conversation else table.conversation_id
        db.session.execute(delete(table).where(column.in_(conversation_ids)))
    db.session.commit()


def add_lines(owner: int, lines: list[tuple[dict, str]]) -> None:
    """Store some of a batch's lines (each a job's columns, and the session id of the owner's conversation it goes
    in) as held jobs with their user messages, in one short transaction of a few statements. They wait for their
    batch to be `in_progress` before `release_lines` enqueues any (app/batches.py writes a big file this way, a
    chunk at a time, so that other writers get in between)."""
    request_id = logs.request_id.get()
    with in_turn():
        titles = {session_id: _title(job["user_input"]) for job, session_id in reversed(lines)}  # the first's title
        conversations = _ensure_conversations(owner, titles)
        rows = [{**job, "conversation_id": conversations[session_id], "user_id": owner, "held": True,
                 "request_id": request_id} for job, session_id in lines]
        _insert_messages([{"conversation_id": row["conversation_id"], "role": "user", "content": row["user_input"],
                           "job_id": job_id} for row, job_id in zip(rows, _insert_jobs(rows))])
        db.session.commit()


def _ensure_conversations(owner: int, titles: dict[str, str]) -> dict[str, str]:
    """The internal ids of the owner's conversations named by `titles`' session ids, those that are new made with
    that title, in one upsert."""
    dialect_insert = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}[db.session.get_bind().dialect.name]
    now = utcnow()
    upsert = dialect_insert(Conversation.__table__).on_conflict_do_update(index_elements=["user_id", "session_id"],
                                                                          set_={"updated_at": now})
    rows = [{"id": secrets.token_hex(8), "session_id": session_id, "title": title, "user_id": owner,
             "created_at": now, "updated_at": now} for session_id, title in titles.items()]
    return dict(db.session.execute(upsert.returning(Conversation.session_id, Conversation.id), rows).all())


# Core inserts of many rows: SQLAlchemy sends them as a few multi-row INSERTs, without making an object of each.


def _insert_jobs(rows: list[dict]) -> list[int]:
    """Job rows; their ids, in order. Each statement's rows are inserted, and numbered, in the order given, so the
    ids sorted are theirs in order (asking SQLAlchemy to match them up would make SQLite insert one row at a time)."""
    if not rows:
        return []
    return sorted(db.session.scalars(insert(Job.__table__).returning(Job.id), rows))


def _insert_messages(rows: list[dict]) -> None:
    if rows:
        db.session.execute(insert(Message.__table__), rows)


def release_lines(api_key_id: int | None) -> int:
    """Enqueue the key's next held batch lines, so that BATCH_LINES_QUEUED of them wait in Redis. Every key's
    batch work thus takes turns in the batch queue, whatever the size of each batch: a 5,000-line batch holds the
    others back by a few lines, not by its length. Returns how many were released."""
    room = current().settings.batch_lines_queued - db.session.scalar(
        select(func.count()).select_from(Job).where(Job.api_key_id == api_key_id, Job.status == JobStatus.QUEUED.value,
                                                    Job.batch_id.is_not(None), Job.held.is_(False)))
    if room <= 0:
        return 0
    started = select(Batch.id).where(Batch.status == "in_progress")  # not one still storing its lines
    next_lines = (select(Job.id).where(Job.held.is_(True), Job.api_key_id == api_key_id, Job.batch_id.in_(started))
                  .order_by(Job.id).limit(room).scalar_subquery())
    released = db.session.scalars(update(Job).where(Job.id.in_(next_lines), Job.held.is_(True))
                                  .values(held=False).returning(Job.id)).all()
    db.session.commit()
    for job in db.session.scalars(select(Job).where(Job.id.in_(released)).order_by(Job.id)):
        enqueue(job)
    return len(released)


def enqueue(job: Job, priority: str | None = None, worker: str | None = None) -> bool:
    """Push the job to the worker that holds its conversation's KV state if that worker is idle, or to `worker`
    (the one finishing the previous turn right now), else to its model's queue (app/affinity.py)."""
    redis = current().redis
    try:
        holder = worker or _state_holder(job)
        if holder and (worker or affinity.is_idle(redis, holder)):
            own = Queue(affinity.worker_queue(holder), connection=redis)
            _push(own, job)
            if worker or affinity.is_idle(redis, holder) or not own.remove(rq_id(job.id)):
                return True  # still idle, or it took the job already, or handed it over itself
        _push(Queue(queue_name(job.model, priority or job.priority), connection=redis), job)
    except RedisError as exc:
        log.warning("job %s accepted but not enqueued yet (%s); the reconciler will enqueue it", job.id, exc)
        return False
    return True


def _push(queue: Queue, job: Job) -> None:
    queue.enqueue(run, job.id, job_id=rq_id(job.id), job_timeout=current().settings.job_timeout + 60,
                  result_ttl=600, failure_ttl=24 * 3600, description=f"llamalith job {job.id}")


def _state_holder(job: Job) -> str | None:
    """The worker that ran the conversation's previous turn on the same model: it keeps that turn's KV state."""
    return db.session.scalar(select(Job.worker).where(Job.conversation_id == job.conversation_id, Job.id < job.id,
                                                      Job.model == job.model, Job.worker.is_not(None))
                             .order_by(Job.id.desc()).limit(1))


def hand_over(worker: str) -> None:
    """Move the turns waiting in `worker`'s own queue to the shared queues: it has become busy, or is stopping."""
    redis = current().redis
    key = Queue(affinity.worker_queue(worker), connection=redis).key
    while (waiting := redis.lpop(key)) is not None:
        job = db.session.get(Job, job_id_of(waiting))
        if job is not None and job.status == JobStatus.QUEUED.value:
            enqueue(job)


# Running (inside a worker, in an app context) ---------------------------------------------------------


def run(job_id: int) -> str:
    """RQ entry point. Never raises for a model problem: the job row records it instead."""
    job = _claim(job_id, current().worker_name)
    if job is not None:
        logs.request_id.set(job.request_id)
        log.info("job %s started on %s (attempt %s, model %s)", job.id, job.worker, job.attempts, job.model)
        status = _generate(job, job.attempts)
        log.info("job %s ended %s", job_id, status)
    elif _transition(Job.id == job_id, Job.status == JobStatus.QUEUED.value, _waited_too_long(),
                     processed_at=utcnow(), **QUEUE_WAIT_EXPIRED):
        streams.TokenWriter(current().redis, job_id, 1).finish(JobStatus.ERROR.value)
        status = JobStatus.ERROR.value
    else:
        return "skipped"
    _enqueue_next_turn(db.session.get(Job, job_id), current().worker_name)
    return status


_OTHER = aliased(Job)  # another job, in correlated subqueries; made once: an alias costs more than its query
_UNFINISHED_BEFORE = (
    select(_OTHER.id)
    .where(_OTHER.conversation_id == Job.conversation_id, _OTHER.id < Job.id,
           _OTHER.status.in_([JobStatus.QUEUED.value, JobStatus.PROCESSING.value]))
    .exists()
)


def _claim(job_id: int, worker: str) -> Job | None:
    """queued -> processing, unless an earlier turn of the same conversation has not finished yet (then the job
    stays queued, and that turn's end enqueues it again) or it waited too long (then `run` ends it)."""
    now = utcnow()
    claimed = _transition(Job.id == job_id, Job.status == JobStatus.QUEUED.value, ~_UNFINISHED_BEFORE,
                          ~_waited_too_long(), status=JobStatus.PROCESSING.value, attempts=Job.attempts + 1, worker=worker,
                          started_at=now, heartbeat_at=now, retry_at=None)
    if not claimed:
        return None
    job = db.session.get(Job, job_id)
    if job.batch_id:
        release_lines(job.api_key_id)  # this key's next line takes the place this one leaves in the queue
    return job


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
        _requeue(job, attempt)
        return status.value
    usage["duration_ms"] = int((time.monotonic() - started) * 1000)
    _finish(job, attempt, status, "".join(pieces), code, message, **usage)
    writer.finish(status.value)
    if code is None:
        model.keep_state()
    return status.value


def _requeue(job: Job, attempt: int) -> None:
    """The worker is shutting down: hand the job back at once; an attempt cut short this way is not counted."""
    if _transition(*_owned(job.id, attempt), status=JobStatus.QUEUED.value, attempts=attempt - 1, worker=None):
        log.info("job %s handed back to the queue: the worker is stopping", job.id)
        enqueue(job)


def history(job: Job) -> list[Turn]:
    """What the model sees before the input, oldest first: the turns the client sent along, else the earlier
    completed turns of the job's conversation."""
    if job.history is not None:
        return [Turn(user, assistant) for user, assistant in job.history]
    return [turn for turn in conversation_turns(job.conversation_id, before_job_id=job.id) if turn.complete]


def _finish(job: Job, attempt: int, status: JobStatus, text: str, code: str | None, message: str | None,
            **usage) -> None:
    """Record the outcome once, with the answer message in the same commit: only the attempt that owns the row
    may finish it, so a retried job never stores its answer twice."""

    def store_answer() -> None:
        if text or status == JobStatus.DONE:
            db.session.add(Message(conversation_id=job.conversation_id, role="assistant", content=text, job_id=job.id))
            db.session.execute(update(Conversation).where(Conversation.id == job.conversation_id)
                               .values(updated_at=utcnow()))

    if not _transition(*_owned(job.id, attempt), also=store_answer, status=status.value, result=text, error=message,
                       error_code=code, processed_at=utcnow(), **usage):
        log.warning("job %s attempt %s finished after losing ownership; outcome discarded", job.id, attempt)
    elif job.callback_url:
        webhooks.enqueue(db.session.get(Job, job.id))


def _enqueue_next_turn(job: Job, worker: str | None = None) -> None:
    """Enqueue the conversation's next queued turn; `worker`, ending this turn, keeps the next one of its model."""
    following = db.session.scalar(
        select(Job).where(Job.conversation_id == job.conversation_id, Job.id > job.id,
                          Job.status == JobStatus.QUEUED.value).order_by(Job.id).limit(1)
    )
    if following is not None:
        enqueue(following, worker=worker if following.model == job.model else None)


# Cancelling ---------------------------------------------------------------------------------------


class AlreadyFinished(Exception):
    pass


class QueueUnavailable(Exception):
    """Redis cannot be reached, so a running job cannot be told to stop right now."""


def cancel(job: Job, wait_seconds: float = 3.0) -> Job:
    """A queued job is cancelled at once; a running one is flagged and stops within a token.
    Waits briefly for the worker so the answer usually shows the final state."""
    if job.finished:
        raise AlreadyFinished(f"job {job.id} has already ended as '{job.status}'")
    if _transition(Job.id == job.id, Job.status == JobStatus.QUEUED.value,
                   status=JobStatus.CANCELLED.value, processed_at=utcnow(), result="", held=False):
        _forget_queued(job)
        streams.TokenWriter(current().redis, job.id, 1).finish(JobStatus.CANCELLED.value)
        _enqueue_next_turn(job)
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


def cancel_lines(batch_id: str) -> None:
    """Cancel a batch's lines that have not ended: the held ones at once, in one statement (they are not in
    Redis), the others one by one, without waiting for running ones to stop."""
    _transition(Job.batch_id == batch_id, Job.held.is_(True), Job.status == JobStatus.QUEUED.value,
                status=JobStatus.CANCELLED.value, processed_at=utcnow(), result="", held=False)
    for job in db.session.scalars(select(Job).where(Job.batch_id == batch_id,
                                                    Job.status.in_([JobStatus.QUEUED.value,
                                                                    JobStatus.PROCESSING.value]))).all():
        try:
            cancel(job, wait_seconds=0)
        except (AlreadyFinished, QueueUnavailable):
            pass  # it ended meanwhile, or it stops at its time limit: either way it ends, and settles the batch


def _forget_queued(job: Job) -> None:
    try:
        for priority in Priority:
            Queue(queue_name(job.model, priority.value), connection=current().redis).remove(rq_id(job.id))
    except RedisError as exc:
        log.warning("job %s cancelled; its queue entry stays until a worker skips it (%s)", job.id, exc)


def _wait_until_finished(job: Job, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        db.session.commit()  # end the read transaction so the next one sees the worker's write
        if JobStatus(db.session.scalar(select(Job.status).where(Job.id == job.id))).finished:
            return
        time.sleep(0.05)


# Keeping the truth (worker side) ----------------------------------------------------------------------


def heartbeat(worker: str) -> None:
    db.session.execute(update(Job).where(Job.worker == worker, Job.status == JobStatus.PROCESSING.value)
                       .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False))
    db.session.commit()


def reconcile() -> dict[str, int]:
    """Repair the queue from the database: retry or fail jobs whose worker vanished, expire jobs that
    waited too long, and enqueue queued jobs Redis does not hold (or that aged into interactive); remove imports
    that never finished."""
    expired = _transition(Job.status == JobStatus.QUEUED.value, _waited_too_long(), processed_at=utcnow(),
                          **QUEUE_WAIT_EXPIRED)
    counts = {"lost": _resolve_lost_jobs(), "expired": expired, "enqueued": 0,
              "unfinished_imports": remove_unfinished_imports()}
    now = utcnow()
    waiting = db.session.execute(
        select(Job, progress.queue_rank())
        .where(Job.status == JobStatus.QUEUED.value, Job.held.is_(False),
               or_(Job.retry_at.is_(None), Job.retry_at <= now))
        .order_by(Job.id)
    ).all()
    for job, rank in waiting:
        priority = Priority.INTERACTIVE.value if rank == 0 else Priority.BATCH.value
        if not _pending_in(rq_id(job.id), queue_name(job.model, priority)):
            counts["enqueued"] += enqueue(job, priority)
    for api_key_id in db.session.scalars(select(Job.api_key_id).where(Job.held.is_(True)).distinct()):
        counts["enqueued"] += release_lines(api_key_id)  # a released line may have been lost with Redis
    for job in webhooks.due():  # also the ends the worker did not see: expiry, a lost worker's last attempt
        webhooks.enqueue(job)
    return counts


def _resolve_lost_jobs() -> int:
    stale = utcnow() - timedelta(seconds=HEARTBEAT_STALE)
    lost = db.session.scalars(select(Job).where(Job.status == JobStatus.PROCESSING.value,
                                                Job.heartbeat_at < stale)).all()
    for job in lost:
        if job.attempts < current().settings.max_attempts:
            backoff = RETRY_BACKOFF * 2 ** (job.attempts - 1)
            values = dict(status=JobStatus.QUEUED.value, worker=None, retry_at=utcnow() + timedelta(seconds=backoff))
            log.warning("job %s lost its worker %s (attempt %s); retrying in %s s", job.id, job.worker,
                        job.attempts, backoff)
        else:
            values = dict(status=JobStatus.ERROR.value, error_code="worker_lost", processed_at=utcnow(),
                          error=f"the worker stopped during each of {job.attempts} attempts; giving up")
        _transition(*_owned(job.id, job.attempts), **values)
    return len(lost)


def _pending_in(rq_job_id: str, queue: str) -> bool:
    """Waiting in `queue`, or for a short while in a worker's own queue (a live worker takes it at once)."""
    try:
        rq_job = RQJob.fetch(rq_job_id, connection=current().redis)
    except Exception:  # NoSuchJobError, or a hash left half-written by a wipe
        return False
    since = utcnow() - timedelta(seconds=affinity.UNCLAIMED)
    recently = rq_job.enqueued_at is not None and rq_job.enqueued_at.replace(tzinfo=None) > since
    held = rq_job.origin.startswith(affinity.PREFIX) and recently
    return rq_job.get_status(refresh=False) in WAITING_IN_REDIS and (rq_job.origin == queue or held)
