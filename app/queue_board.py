"""The Queue page's figures: per model, the jobs waiting (in queue order, with their places and expected waits) and
running (on which worker and sequence, beside how many others); each live worker's state; and the last hour minute by minute
(tokens per second, jobs waiting, time to first token p50/p95). The figures of now come from the functions /metrics
reads (app/progress.py, app/affinity.py), so the page and a scrape agree."""

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis import RedisError
from sqlalchemy import ColumnElement, or_, select

from app import affinity, places, progress
from app.extensions import current, db
from app.models import Job, JobStatus, utcnow

MINUTES = 60  # the charts' window, one point a minute
SHOWN = 100  # waiting jobs listed per model; the rest are counted


@dataclass
class ModelLine:
    model: str
    depth: dict[str, int]  # queued jobs per priority, everyone's (as /metrics says)
    waiting: list[tuple[Job, progress.Progress]]  # the viewer's, in queue order
    running: list[Job]  # the viewer's
    live_workers: int


@dataclass
class Worker:
    name: str
    models: list[str]  # served
    seen_ago: float  # seconds since it last announced itself
    sequences: dict[str, tuple[int, int]]  # per loaded model: sequences in use, sequences it has


@dataclass
class Hour:
    """The last MINUTES minutes, oldest first: one value a minute (None: no job gave one)."""

    tokens_per_second: list[float]
    waiting: list[int]
    first_token_p50: list[float | None]
    first_token_p95: list[float | None]


@dataclass
class Board:
    models: list[ModelLine]
    workers: list[Worker]
    beside: dict[int, int]  # running job -> how many others its worker decodes with it
    sequence: dict[int, int]  # running job -> the sequence its worker decodes it in, as last announced
    hour: Hour


def board(visible: ColumnElement[bool]) -> Board:
    """Everything the page shows; `visible` picks the viewer's jobs (everyone's for an admin)."""
    depths, live = progress.queue_depths(), workers()
    models = [_line(model, visible, depths, sum(model in worker.models for worker in live))
              for model in current().settings.offered_models]
    return Board(models, live, progress.running_beside(), _sequences([worker.name for worker in live]), last_hour())


def _line(model: str, visible: ColumnElement[bool], depths: dict[tuple[str, str], int],
          live_workers: int) -> ModelLine:
    waiting = db.session.scalars(select(Job).where(visible, Job.model == model, Job.status == JobStatus.QUEUED.value)
                                 .order_by(places.queue_rank(), Job.id).limit(SHOWN)).all()
    running = db.session.scalars(select(Job).where(visible, Job.model == model,
                                                   Job.status == JobStatus.PROCESSING.value).order_by(Job.id)).all()
    standing = progress.of(waiting)
    return ModelLine(model, {priority: count for (name, priority), count in depths.items() if name == model},
                     [(job, standing[job.id]) for job in waiting], running, live_workers)


def workers() -> list[Worker]:
    """The live workers, by name, as they last announced themselves."""
    try:
        redis = current().redis
        served, seen = affinity.live_workers(redis), affinity.last_announced(redis)
    except RedisError:
        return []
    loaded: dict[str, dict[str, tuple[int, int]]] = {name: {} for name in served}
    for model in current().settings.offered_models:
        for announced in progress.sequences_of(model):
            loaded.setdefault(announced["worker"], {})[model] = (announced["in_use"], announced["parallel"])
    now = time.time()
    return [Worker(name, models, round(now - seen.get(name, now), 1), loaded[name])
            for name, models in sorted(served.items())]


def _sequences(workers: list[str]) -> dict[int, int]:
    try:
        return affinity.running_sequences(current().redis, workers)
    except RedisError:
        return {}


def last_hour(now: datetime | None = None) -> Hour:
    """Minute by minute: completion tokens of the jobs that ended, over 60 s; the jobs waiting at the minute's end
    (a job waits from its submission until it starts, or ends without starting); the time to first token of the
    jobs that started."""
    start = (now or utcnow()) - timedelta(minutes=MINUTES)
    # Every job that counts in the window ended in it or has not ended (ix_jobs_processed_at serves both).
    rows = db.session.execute(
        select(Job.created_at, Job.started_at, Job.processed_at, Job.completion_tokens, Job.first_token_ms)
        .where(or_(Job.processed_at >= start, Job.processed_at.is_(None)))).all()
    tokens = [0] * MINUTES
    firsts: list[list[int]] = [[] for _ in range(MINUTES)]
    changes: list[tuple[datetime, int]] = []
    for created, started, processed, completion, first_token_ms in rows:
        if processed is not None and processed >= start and completion:
            tokens[_minute(processed, start)] += completion
        if started is not None and started >= start and first_token_ms is not None:
            firsts[_minute(started, start)].append(first_token_ms)
        changes.append((created, 1))
        if (left := started or processed) is not None:
            changes.append((left, -1))
    return Hour([count / 60 for count in tokens], _waiting(sorted(changes), start),
                [_percentile(values, 0.5) for values in firsts], [_percentile(values, 0.95) for values in firsts])


def _minute(moment: datetime, start: datetime) -> int:
    return min(int((moment - start).total_seconds() // 60), MINUTES - 1)


def _waiting(changes: list[tuple[datetime, int]], start: datetime) -> list[int]:
    counts, waiting, applied = [], 0, 0
    for minute in range(1, MINUTES + 1):
        end = start + timedelta(minutes=minute)
        while applied < len(changes) and changes[applied][0] <= end:
            waiting += changes[applied][1]
            applied += 1
        counts.append(waiting)
    return counts


def _percentile(values: list[int], share: float) -> float | None:
    """The nearest-rank percentile of milliseconds, in seconds; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * share) - 1)] / 1000
