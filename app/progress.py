"""Where an unfinished job stands: its place in its model's line (the one rule of queue order), the expected wait,
the text generated so far, and how many live workers serve its model."""

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis import RedisError
from sqlalchemy import BindParameter, ColumnElement, Select, and_, bindparam, case, func, or_, select

from app import affinity, streams
from app.extensions import current, db
from app.models import Job, JobStatus, Priority, utcnow


def queue_rank(job=Job, aged: datetime | BindParameter | None = None) -> ColumnElement[int]:
    """0 for work that goes first, else 1 (`goes_first`)."""
    return case((goes_first(job, aged), 0), else_=1)


def goes_first(job=Job, aged: datetime | BindParameter | None = None) -> ColumnElement[bool]:
    """Interactive work, or batch work that has waited BATCH_AGING (a batch's lines never age: they are overnight
    work, shared fairly among keys instead). Work made before `aged` has waited (`aged_before()` unless given: a
    bound parameter, in a statement built once)."""
    if aged is None:
        aged = aged_before()
    return or_(job.priority == Priority.INTERACTIVE.value, and_(job.created_at < aged, job.batch_id.is_(None)))


@dataclass
class Progress:
    """Where an unfinished job stands: its place in line and expected wait, or the text generated so far."""

    position: int | None = None  # 1: starts next on its model
    eta_seconds: float | None = None
    partial: str | None = None  # while processing: the text so far, from the live token stream


def of(jobs: Iterable[Job]) -> dict[int, Progress]:
    """Progress of many jobs at once, in a few statements whatever their number (lists of 1,000 jobs)."""
    jobs = list(jobs)
    queued = [job for job in jobs if job.status == JobStatus.QUEUED.value]
    positions = _positions([job.id for job in queued])
    etas = {model: eta_per_position(model) for model in {job.model for job in queued}}
    running = [job.id for job in jobs if job.status == JobStatus.PROCESSING.value]
    partials = streams.partial_texts(current().redis, running)
    found: dict[int, Progress] = {}
    for job in jobs:
        # A queued job missing from the ranking was claimed since it was read: it is the one starting now.
        if job.status == JobStatus.QUEUED.value:
            found[job.id] = _waiting(positions.get(job.id, 1), etas.get(job.model))
        else:
            found[job.id] = Progress(partial=partials.get(job.id))
    return found


def _waiting(position: int, per_position: float | None) -> Progress:
    return Progress(position, round(per_position * position, 1) if per_position is not None else None)


def _positions_statement() -> Select:
    """Each queued job's place on its model: interactive (and aged batch) work first, then by age. Counted, not
    sorted: the (model, status) index walks only the model's queued jobs, however many others there are.

    Built once, in Core: every poll asks, and building the ORM form of this statement (then its cache key) took
    five times as long as running it (docs/benchmarks.md, the web tier)."""
    jobs, other = Job.__table__, Job.__table__.alias("other")
    aged = bindparam("aged")
    mine, theirs = queue_rank(jobs.c, aged), queue_rank(other.c, aged)
    # Held batch lines are not in the queue yet: they count only ahead of their own key's later lines.
    in_line = or_(other.c.held.is_(False), and_(jobs.c.held.is_(True), other.c.api_key_id == jobs.c.api_key_id))
    ahead = (select(func.count()).select_from(other)
             .where(other.c.model == jobs.c.model, other.c.status == JobStatus.QUEUED.value, in_line,
                    or_(theirs < mine, and_(theirs == mine, other.c.id < jobs.c.id)))
             .scalar_subquery())
    return select(jobs.c.id, ahead + 1).where(jobs.c.id.in_(bindparam("ids", expanding=True)),
                                              jobs.c.status == JobStatus.QUEUED.value)


_POSITIONS = _positions_statement()


def place_in_line(jobs, aged: BindParameter) -> ColumnElement[int | None]:
    """A column for a statement over `jobs` (a poll's, app/job_views.py): the place of a queued job that is not
    held, else NULL. `_positions_statement`'s rule, with the job's own rank worked out once rather than per row, so
    each row counted is one simple test of the `ix_jobs_line` index, never a read of the table."""
    other = Job.__table__.alias("other")
    first, theirs_first, before = goes_first(jobs.c, aged), goes_first(other.c, aged), other.c.id < jobs.c.id
    ahead = (select(func.count()).select_from(other)
             .where(other.c.model == jobs.c.model, other.c.status == JobStatus.QUEUED.value, other.c.held.is_(False),
                    or_(and_(theirs_first, before), and_(~first, or_(theirs_first, before))))
             .scalar_subquery())
    return case((and_(jobs.c.status == JobStatus.QUEUED.value, jobs.c.held.is_(False)), ahead + 1), else_=None)


def in_line(model: str, place: int) -> Progress:
    """What `of` says of a queued job at `place` (from `place_in_line`)."""
    return _waiting(place, eta_per_position(model))


def aged_before() -> datetime:
    """Batch work made before this has waited BATCH_AGING: it goes first now (`queue_rank`)."""
    return utcnow() - timedelta(seconds=current().settings.batch_aging)


def _positions(job_ids: list[int]) -> dict[int, int]:
    if not job_ids:
        return {}
    return dict(db.session.connection().execute(_POSITIONS, {"aged": aged_before(), "ids": job_ids}).all())


ESTIMATE_SECONDS = 2  # how long a model's wait estimate is reused: polls come many times a second


def eta_per_position(model: str) -> float | None:
    """The recent mean job duration, shared among the live workers' sequences (each worker decodes several jobs at
    once, each of them slower than alone, which the durations measured show); None before any job has finished."""
    estimates = current().estimates
    now = time.monotonic()
    if model not in estimates or estimates[model][0] < now:
        estimates[model] = (now + ESTIMATE_SECONDS, _measure_eta(model))
    return estimates[model][1]


def _measure_eta(model: str) -> float | None:
    recent = db.session.execute(
        select(Job.started_at, Job.processed_at)
        .where(Job.model == model, Job.status == JobStatus.DONE.value, Job.started_at.is_not(None))
        .order_by(Job.id.desc()).limit(20)
    ).all()
    if not recent:
        return None
    mean = sum((done - start).total_seconds() for start, done in recent) / len(recent)
    sequences = sum(worker["parallel"] for worker in sequences_of(model))
    return mean / max(sequences, live_workers(model), 1)


def live_workers(model: str) -> int:
    try:
        return sum(model in served for served in affinity.live_workers(current().redis).values())
    except RedisError:
        return 0


def sequences_of(model: str) -> list[dict]:
    """Per live worker with `model` loaded: its sequences in use and how many it has (continuous batching)."""
    try:
        announced = affinity.sequences(current().redis, model)
    except RedisError:
        return []
    return [{"worker": name, "in_use": used, "parallel": count} for name, (used, count) in sorted(announced.items())]


def queue_depths() -> dict[tuple[str, str], int]:
    """Queued jobs per (model, priority): /metrics and the Queue page."""
    return {(model, priority): count for model, priority, count in db.session.execute(
        select(Job.model, Job.priority, func.count()).where(Job.status == JobStatus.QUEUED.value)
        .group_by(Job.model, Job.priority))}


def running_beside() -> dict[int, int]:
    """For each running job, how many other jobs its worker is decoding with it (continuous batching). A count, not
    which: they may be other users'."""
    workers: dict[str, list[int]] = {}
    for job_id, worker in db.session.execute(select(Job.id, Job.worker).where(
            Job.status == JobStatus.PROCESSING.value, Job.worker.is_not(None))):
        workers.setdefault(worker, []).append(job_id)
    return {job_id: len(ids) - 1 for ids in workers.values() for job_id in ids}


def queue_depth(model: str) -> int:
    return db.session.scalar(select(func.count()).select_from(Job)
                             .where(Job.model == model, Job.status == JobStatus.QUEUED.value))
