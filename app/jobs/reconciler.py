"""Keeping the truth, from every worker's maintenance thread: heartbeats on running jobs, and the reconciler, which
retries or fails jobs whose worker vanished, expires those that waited too long and enqueues again what Redis
does not hold."""

import logging
from datetime import timedelta

from sqlalchemy import or_, select, update

from app import places, webhooks
from app.extensions import current, db
from app.jobs.imported import remove_unfinished_imports
from app.jobs.lifecycle import QUEUE_WAIT_EXPIRED, owned, transition, waited_too_long
from app.jobs.queues import enqueue, pending_in, queue_name, release_lines, rq_id
from app.models import Job, JobStatus, Priority, utcnow

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 5  # seconds between a worker's heartbeats for its running job
HEARTBEAT_STALE = 20  # a processing job without a heartbeat for this long has lost its worker
RETRY_BACKOFF = 2  # seconds before the first retry; doubles with every attempt


def heartbeat(worker: str) -> None:
    db.session.execute(update(Job).where(Job.worker == worker, Job.status == JobStatus.PROCESSING.value)
                       .values(heartbeat_at=utcnow()).execution_options(synchronize_session=False))
    db.session.commit()


def reconcile() -> dict[str, int]:
    """Repair the queue from the database: retry or fail jobs whose worker vanished, expire jobs that
    waited too long, and enqueue queued jobs Redis does not hold (or that aged into interactive); remove imports
    that never finished."""
    expired = transition(Job.status == JobStatus.QUEUED.value, waited_too_long(), processed_at=utcnow(),
                         **QUEUE_WAIT_EXPIRED)
    counts = {"lost": _resolve_lost_jobs(), "expired": expired, "enqueued": 0,
              "unfinished_imports": remove_unfinished_imports()}
    now = utcnow()
    waiting = db.session.execute(
        select(Job, places.queue_rank())
        .where(Job.status == JobStatus.QUEUED.value, Job.held.is_(False),
               or_(Job.retry_at.is_(None), Job.retry_at <= now))
        .order_by(Job.id)
    ).all()
    for job, rank in waiting:
        priority = Priority.INTERACTIVE.value if rank == 0 else Priority.BATCH.value
        if not pending_in(rq_id(job.id), queue_name(job.model, priority)):
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
        transition(*owned(job.id, job.attempts), **values)
    return len(lost)
