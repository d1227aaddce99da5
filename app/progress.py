"""Where an unfinished job stands: its place in its model's line (app/places.py), the expected wait, the text
generated so far, and how many live workers serve its model."""

import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis import RedisError
from sqlalchemy import func, select

from app import affinity, places, streams
from app.extensions import current, db
from app.models import Job, JobStatus


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
    positions = places.positions([job.id for job in queued])
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


def in_line(model: str, place: int) -> Progress:
    """What `of` says of a queued job at `place` (from `places.place_in_line`)."""
    return _waiting(place, eta_per_position(model))


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
