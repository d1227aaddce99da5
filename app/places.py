"""A queued job's place in its model's line: the one rule of queue order (`goes_first`) and the count of the jobs
ahead, exact while the queue is short; past LONG_QUEUE queued jobs, the part of the line older than a snapshot
comes from the snapshot (a second old or so), so a poll's cost stops growing with the queue."""

import threading
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import BindParameter, ColumnElement, Select, and_, bindparam, case, func, or_, select

from app.extensions import current, db
from app.models import Job, JobStatus, Priority, utcnow

# A count reads ~0.6 µs a queued job (index only): 500 cost 0.3 ms of a poll's ~0.4 ms, 3,000 doubled a poll's cost.
LONG_QUEUE = 500
SNAPSHOT_SECONDS = 1.0  # the least a snapshot is reused; longer if taking it was slow (at most 5% of the time)


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


def aged_before() -> datetime:
    """Batch work made before this has waited BATCH_AGING: it goes first now (`queue_rank`)."""
    return utcnow() - timedelta(seconds=current().settings.batch_aging)


@dataclass(frozen=True)
class Snapshot:
    """Each model's queued jobs that are not held, up to job `newest`, as they stood when it was taken: those that
    went first and the others, each in id order. `newest` 0: the queue was short, nothing is taken from it."""

    newest: int = 0
    firsts: dict[str, list[int]] = field(default_factory=dict)
    others: dict[str, list[int]] = field(default_factory=dict)
    until: float = 0.0  # reused until this `time.monotonic()`

    def ahead(self, model: str, first: bool, job_id: int) -> int:
        """Its jobs ahead of a job that goes first now (or not): the firsts before it (or every first, and the
        others before it)."""
        firsts = self.firsts.get(model, [])
        if first:
            return bisect_left(firsts, job_id)
        return len(firsts) + bisect_left(self.others.get(model, []), job_id)

    def place(self, row) -> int | None:
        """The place of the job in a row with `place_in_line`'s or `_POSITIONS`'s columns, read with this snapshot's
        parameters: what the statement counted, plus the jobs ahead in the snapshot unless it counted them all (a
        held line, `counted_after`)."""
        if row.place is None:
            return None
        return row.place if row.held else row.place + self.ahead(row.model, row.first, row.id)


class Snapshots:
    """The process's latest snapshot, taken again once it is due by one request while the others use it."""

    def __init__(self) -> None:
        self.latest = Snapshot()
        self._taking = threading.Lock()

    def now(self) -> Snapshot:
        if self.latest.until < time.monotonic() and self._taking.acquire(blocking=False):
            try:
                self.latest = _take()
            finally:
                self._taking.release()
        return self.latest


def _take() -> Snapshot:
    """The line as it stands, reused for SNAPSHOT_SECONDS or 20 times as long as taking it took (a queue of many
    thousands), so that taking snapshots costs a process at most a 20th of its time."""
    started = time.monotonic()
    models = list(current().settings.models)
    rows = db.session.connection().execute(_LINES, {"aged": aged_before(), "models": models}).all()
    firsts: dict[str, list[int]] = {model: [] for model in models}
    others: dict[str, list[int]] = {model: [] for model in models}
    for model, job_id, first in rows:
        (firsts if first else others)[model].append(job_id)
    took = time.monotonic() - started
    until = time.monotonic() + max(SNAPSHOT_SECONDS, 20 * took)
    if len(rows) < LONG_QUEUE:
        return Snapshot(until=until)
    return Snapshot(max(job_id for _, job_id, _ in rows), firsts, others, until)


def _lines_statement() -> Select:
    jobs = Job.__table__
    return (select(jobs.c.model, jobs.c.id, goes_first(jobs.c, bindparam("aged")))
            .where(jobs.c.model.in_(bindparam("models", expanding=True)),
                   jobs.c.status == JobStatus.QUEUED.value, jobs.c.held.is_(False))
            .order_by(jobs.c.model, jobs.c.id))


_LINES = _lines_statement()


def counted_after(jobs) -> ColumnElement[int]:
    """The id past which the jobs ahead of a row of `jobs` are counted rather than taken from the snapshot: 0 (all
    counted) for a held line, which the snapshot leaves out, or a model it does not cover."""
    return case((or_(jobs.c.held.is_(True), jobs.c.model.not_in(bindparam("covered", expanding=True))), 0),
                else_=bindparam("newest"))


def snapshot_parameters(snapshot: Snapshot) -> dict:
    """The bound parameters of a statement using `counted_after`, and `aged`."""
    return {"aged": aged_before(), "newest": snapshot.newest, "covered": list(snapshot.firsts)}


def _positions_statement() -> Select:
    """Each queued job's place on its model, less the jobs ahead of it in the snapshot: interactive (and aged
    batch) work first, then by age. Counted, not sorted: the (model, status) index walks only the model's queued
    jobs, however many others there are.

    Built once, in Core: every poll asks, and building the ORM form of this statement (then its cache key) took
    five times as long as running it (docs/benchmarks.md, the web tier)."""
    jobs, other = Job.__table__, Job.__table__.alias("other")
    aged = bindparam("aged")
    mine, theirs = queue_rank(jobs.c, aged), queue_rank(other.c, aged)
    # Held batch lines are not in the queue yet: they count only ahead of their own key's later lines.
    in_line = or_(other.c.held.is_(False), and_(jobs.c.held.is_(True), other.c.api_key_id == jobs.c.api_key_id))
    ahead = (select(func.count()).select_from(other)
             .where(other.c.model == jobs.c.model, other.c.status == JobStatus.QUEUED.value, in_line,
                    other.c.id > counted_after(jobs),
                    or_(theirs < mine, and_(theirs == mine, other.c.id < jobs.c.id)))
             .scalar_subquery())
    return select(jobs.c.id, jobs.c.model, jobs.c.held, goes_first(jobs.c, aged).label("first"),
                  (ahead + 1).label("place")).where(jobs.c.id.in_(bindparam("ids", expanding=True)),
                                                    jobs.c.status == JobStatus.QUEUED.value)


_POSITIONS = _positions_statement()


def positions(job_ids: list[int]) -> dict[int, int]:
    """The place of each of these jobs that is queued."""
    if not job_ids:
        return {}
    snapshot = current().snapshots.now()
    rows = db.session.connection().execute(_POSITIONS, {**snapshot_parameters(snapshot), "ids": job_ids})
    return {row.id: snapshot.place(row) for row in rows}


def place_in_line(jobs) -> tuple[ColumnElement, ...]:
    """Columns for a statement over `jobs` (a poll's, app/job_views.py) given `snapshot_parameters`, from which
    `Snapshot.place` tells a queued job's place: "place", the place of a queued job that is not held less its jobs
    ahead in the snapshot (else NULL), "first", whether it goes first, and "held". `_positions_statement`'s rule,
    with the job's own rank worked out once rather than per row, so each row counted is one simple test of the
    `ix_jobs_line` index, never a read of the table."""
    other = Job.__table__.alias("other")
    aged = bindparam("aged")
    first, theirs_first, before = goes_first(jobs.c, aged), goes_first(other.c, aged), other.c.id < jobs.c.id
    ahead = (select(func.count()).select_from(other)
             .where(other.c.model == jobs.c.model, other.c.status == JobStatus.QUEUED.value, other.c.held.is_(False),
                    other.c.id > counted_after(jobs),
                    or_(and_(theirs_first, before), and_(~first, or_(theirs_first, before))))
             .scalar_subquery())
    place = case((and_(jobs.c.status == JobStatus.QUEUED.value, jobs.c.held.is_(False)), ahead + 1), else_=None)
    return place.label("place"), first.label("first"), jobs.c.held
