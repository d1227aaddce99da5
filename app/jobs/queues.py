"""Where a job waits in Redis: the queues' names and a job's rq id, enqueueing it (to the idle worker that holds its
conversation's KV state, else to its model's queue: app/affinity.py), a busy worker's hand-over, a batch's held lines
let in a few per key at a time, taking a job out, and whether Redis still holds one.

Every job is enqueued under the name of its RQ entry point, ENTRY_POINT, not the function itself: jobs already in
Redis name it, and a worker of the previous version still finds it. (Queue depth and live workers are counted from
the rows and the workers' own keys, in app/progress.py.)"""

import logging
from datetime import timedelta

from redis import RedisError
from rq import Queue
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from sqlalchemy import bindparam, func, select, update

from app import affinity
from app.extensions import current, db
from app.models import Batch, Job, JobStatus, Priority, utcnow

log = logging.getLogger(__name__)

ENTRY_POINT = "app.jobs.run"  # app/jobs/running.py: run, re-exported by the package
WAITING_IN_REDIS = {RQStatus.QUEUED, RQStatus.DEFERRED, RQStatus.SCHEDULED}
# A queued row whose RQ job "started" this recently is being claimed right now (or handed back by its run); one
# that started longer ago was popped by a worker that died. Enqueued again too early, the duplicate is skipped
# by the claim, but counts meanwhile as an interactive turn waiting, for which a batch line gives its place up.
CLAIMING = 20


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


def enqueue(job: Job, priority: str | None = None, worker: str | None = None, at_front: bool = False,
            first_turn: bool = False) -> bool:
    """Push the job to the worker that holds its conversation's KV state if that worker is idle, or to `worker`
    (the one finishing the previous turn right now), else to its model's queue (app/affinity.py); `at_front`: a
    job that gave its place up comes next; `first_turn`: its conversation is new, so no worker holds its state."""
    redis = current().redis
    try:
        holder = worker or (None if first_turn else _state_holder(job))
        if holder and (worker or affinity.is_idle(redis, holder)):
            own = Queue(affinity.worker_queue(holder), connection=redis)
            _push(own, job)
            if worker or affinity.is_idle(redis, holder) or not own.remove(rq_id(job.id)):
                return True  # still idle, or it took the job already, or handed it over itself
        _push(Queue(queue_name(job.model, priority or job.priority), connection=redis), job, at_front)
    except RedisError as exc:
        log.warning("job %s accepted but not enqueued yet (%s); the reconciler will enqueue it", job.id, exc)
        return False
    return True


def _push(queue: Queue, job: Job, at_front: bool = False) -> None:
    # One pipeline for all of rq's writes: without one, rq sends the queue's registration and the job apart. (rq
    # wraps them in MULTI/EXEC itself, whatever the pipeline was made with.)
    with queue.connection.pipeline() as pipe:
        queue.enqueue(ENTRY_POINT, job.id, job_id=rq_id(job.id), job_timeout=current().settings.job_timeout + 60,
                      result_ttl=600, failure_ttl=24 * 3600, description=f"llamalith job {job.id}", pipeline=pipe,
                      at_front=at_front)
        pipe.execute()


def _state_holder(job: Job) -> str | None:
    """The worker that ran the conversation's previous turn on the same model: it keeps that turn's KV state."""
    return db.session.connection().scalar(_STATE_HOLDER, {"conversation_id": job.conversation_id, "job_id": job.id,
                                                          "model": job.model})


_JOBS = Job.__table__
# Built once, in Core, as app/progress.py's positions: every submit asks, and building the statement cost more
# than running it.
_STATE_HOLDER = (select(_JOBS.c.worker)
                 .where(_JOBS.c.conversation_id == bindparam("conversation_id"), _JOBS.c.id < bindparam("job_id"),
                        _JOBS.c.model == bindparam("model"), _JOBS.c.worker.is_not(None))
                 .order_by(_JOBS.c.id.desc()).limit(1))


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


def interactive_waiting(models: list[str], worker: str) -> int:
    """How many turns wait in `worker`'s own queue and the interactive queues of `models`."""
    names = [affinity.worker_queue(worker), *(queue_name(model, Priority.INTERACTIVE.value) for model in models)]
    with current().redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(Queue(name, connection=current().redis).key)
        return sum(pipe.execute())


def hand_over(worker: str) -> None:
    """Move the turns waiting in `worker`'s own queue to the shared queues: it has become busy, or is stopping."""
    redis = current().redis
    key = Queue(affinity.worker_queue(worker), connection=redis).key
    while (waiting := redis.lpop(key)) is not None:
        job = db.session.get(Job, job_id_of(waiting))
        if job is not None and job.status == JobStatus.QUEUED.value:
            enqueue(job)


def forget_queued(job: Job) -> None:
    try:
        for priority in Priority:
            Queue(queue_name(job.model, priority.value), connection=current().redis).remove(rq_id(job.id))
    except RedisError as exc:
        log.warning("job %s cancelled; its queue entry stays until a worker skips it (%s)", job.id, exc)


def pending_in(rq_job_id: str, queue: str) -> bool:
    """Waiting in `queue`, or for a short while in a worker's own queue (a live worker takes it at once)."""
    try:
        rq_job = RQJob.fetch(rq_job_id, connection=current().redis)
    except Exception:  # NoSuchJobError, or a hash left half-written by a wipe
        return False
    since = utcnow() - timedelta(seconds=affinity.UNCLAIMED)
    recently = rq_job.enqueued_at is not None and rq_job.enqueued_at.replace(tzinfo=None) > since
    held = rq_job.origin.startswith(affinity.PREFIX) and recently
    status = rq_job.get_status(refresh=False)
    if status == RQStatus.STARTED:
        claiming = utcnow() - timedelta(seconds=CLAIMING)
        return rq_job.started_at is not None and rq_job.started_at.replace(tzinfo=None) > claiming
    return status in WAITING_IN_REDIS and (rq_job.origin == queue or held)
