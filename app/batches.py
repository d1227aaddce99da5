"""Batches: OpenAI's Batch API on Llamalith's queue. An uploaded JSONL file of chat completion requests is checked
whole (any bad line fails the batch, with line numbers, and nothing is stored or enqueued); then its lines are
stored a chunk at a time, in short transactions that let other writers in, while the batch is `validating`, and
only once all are stored does it start. Each line is a job at batch priority, in its own conversation unless the
line's `user` names one. Keys take turns (jobs.release_lines), so a long batch does not hold back other keys' work;
what becomes of the lines, and the batch's end with its output and error files, is app/batch_lines.py.

Files are kept in the database, so every web node and worker can read and write them."""

import re
import secrets
import time
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update

from app import batch_lines, jobs
from app.batch_files import MAX_ERRORS, MAX_LINES, Line, line_error, read_lines, request_count, too_many
from app.batch_lines import RUNNING, UNFINISHED
from app.errors import APIError
from app.extensions import db
from app.models import Batch, Conversation, Job, JobStatus, Message, StoredFile, utcnow
from app.progress import eta_per_position

ENDPOINT = "/v1/chat/completions"
FILE_PURPOSES = ("batch", "batch_output")  # a client uploads the one, a batch writes the other
# Files and batches are named in printable ASCII ("file-" or "batch_" and 24 hex digits): any other id names none,
# and never reaches the database (PostgreSQL refuses a NUL in text; that would be a 400 where a 404 is right).
STORED_ID = re.compile(r"[!-~]{1,64}")
WINDOWS = {"24h": timedelta(hours=24)}
CHUNK_LINES = 500  # lines stored per transaction: a few tens of milliseconds of the database each
ABANDONED = timedelta(minutes=10)  # a batch still `validating` this long lost the request storing its lines
INTERRUPTED = "the batch was not stored whole (its request ended half-way); create it again"


# Files ------------------------------------------------------------------------------------------------------


def store_file(owner: int, purpose: str, filename: str, content: bytes) -> StoredFile:
    """A batch input file over MAX_LINES is refused here, before any line is parsed."""
    if purpose == "batch" and (count := request_count(content)) > MAX_LINES:
        raise APIError(413, "too_many_requests", too_many(count)["message"], param="file")
    stored = StoredFile(id=f"file-{secrets.token_hex(12)}", user_id=owner, purpose=purpose, filename=filename,
                        bytes=len(content), content=content)
    db.session.add(stored)
    db.session.commit()
    return stored


def owned_file(owner: int, file_id: str) -> StoredFile:
    stored = db.session.get(StoredFile, file_id) if STORED_ID.fullmatch(file_id) else None
    if stored is None or stored.user_id != owner:
        raise APIError(404, "not_found", f"no file with id '{file_id}'", param="file_id")
    return stored


def file_json(stored: StoredFile) -> dict:
    return {"id": stored.id, "object": "file", "bytes": stored.bytes, "created_at": _epoch(stored.created_at),
            "filename": stored.filename, "purpose": stored.purpose, "status": "processed", "expires_at": None,
            "status_details": None}


# Making a batch --------------------------------------------------------------------------------------------


def create(api_key, input_file_id: str, endpoint: str, window: str, metadata: dict | None) -> Batch:
    """The batch, `in_progress` with its lines stored and the first ones enqueued, or `failed` with the errors of
    its input file and nothing stored or enqueued."""
    if endpoint != ENDPOINT:
        raise APIError(400, "invalid_request", f"endpoint must be '{ENDPOINT}'", param="endpoint")
    if window not in WINDOWS:
        raise APIError(400, "invalid_request", f"completion_window must be one of: {', '.join(WINDOWS)}",
                       param="completion_window")
    source = owned_file(api_key.user_id, input_file_id)
    if source.purpose != "batch":
        raise APIError(400, "invalid_request", f"file '{input_file_id}' was not uploaded with purpose 'batch'",
                       param="input_file_id")
    now = utcnow()
    batch = Batch(id=f"batch_{secrets.token_hex(12)}", user_id=api_key.user_id, api_key_id=api_key.id,
                  input_file_id=source.id, endpoint=endpoint, completion_window=window, meta=metadata,
                  status="validating", created_at=now, expires_at=now + WINDOWS[window])
    lines, errors = read_lines(source.content, batch, api_key)
    if errors:
        batch.status, batch.failed_at, batch.errors = "failed", utcnow(), errors[:MAX_ERRORS]
    db.session.add(batch)
    db.session.commit()
    if not errors:
        store_lines(batch, lines)
    return batch


def store_lines(batch: Batch, lines: list[Line]) -> None:
    """Store the checked lines of a `validating` batch CHUNK_LINES at a time, each chunk its own short transaction,
    pausing between them, so that other users' submits get the database meanwhile (SQLite lets one writer in at a
    time: 50,000 lines in one transaction held it for minutes). Then, in one conditional update, the batch is
    `in_progress`, and its first lines are released. Until then its lines are held and `release_lines` passes them
    over, so nothing of a half-stored batch runs; if this request dies half-way, the reconciler discards it
    (`discard_abandoned`)."""
    try:
        for start in range(0, len(lines), CHUNK_LINES):
            began = time.monotonic()
            batch_lines.add_lines(batch.user_id,
                                  [(line.job, line.session_id) for line in lines[start:start + CHUNK_LINES]])
            time.sleep(time.monotonic() - began)  # as long again for everyone else
        started = db.session.execute(update(Batch).where(Batch.id == batch.id, Batch.status == "validating")
                                     .values(status="in_progress", in_progress_at=utcnow(), total=len(lines))).rowcount
        db.session.commit()
    except Exception:
        db.session.rollback()
        discard(batch.id, "storing the batch's lines failed; create it again")
        raise
    if not started:  # the reconciler gave up on it meanwhile
        discard(batch.id, INTERRUPTED)
    db.session.refresh(batch)
    if started:
        jobs.release_lines(batch.api_key_id)


def discard_abandoned() -> int:
    """Batches still `validating` ABANDONED after they were made lost the request that was storing their lines (a
    crash, a restart): each is discarded. Returns how many."""
    abandoned = db.session.scalars(select(Batch.id).where(Batch.status == "validating",
                                                          Batch.created_at < utcnow() - ABANDONED)).all()
    for batch_id in abandoned:
        discard(batch_id, INTERRUPTED)
    return len(abandoned)


def discard(batch_id: str, reason: str) -> None:
    """Delete what a batch that never started stored of its lines, a chunk at a time (with the conversations made
    for them), and fail it with `reason`. None of its lines was released, so none ran."""
    made = db.session.scalar(select(Batch.created_at).where(Batch.id == batch_id))
    while stored := db.session.execute(select(Job.id, Job.conversation_id).where(Job.batch_id == batch_id)
                                       .limit(CHUNK_LINES)).all():
        job_ids, conversations = [job_id for job_id, _ in stored], {conversation for _, conversation in stored}
        db.session.execute(delete(Message).where(Message.job_id.in_(job_ids)))
        db.session.execute(delete(Job).where(Job.id.in_(job_ids)))
        db.session.execute(delete(Conversation).where(
            Conversation.id.in_(conversations), Conversation.created_at >= made,
            ~select(Message.id).where(Message.conversation_id == Conversation.id).exists()))
        db.session.commit()
    db.session.execute(update(Batch).where(Batch.id == batch_id, Batch.status == "validating").values(
        status="failed", failed_at=utcnow(), errors=[line_error(None, "batch_not_stored", reason)]))
    db.session.commit()


# While it runs, and when it ends -----------------------------------------------------------------------------


def counts(batch: Batch) -> dict[str, int]:
    """OpenAI's request_counts: done lines are completed; lines that ended otherwise are failed."""
    if batch.completed is not None:
        return {"total": batch.total, "completed": batch.completed, "failed": batch.failed}
    by_status = dict(db.session.execute(select(Job.status, func.count()).where(Job.batch_id == batch.id)
                                        .group_by(Job.status)).all())
    ended = sum(count for status, count in by_status.items() if status not in UNFINISHED)
    done = by_status.get(JobStatus.DONE.value, 0)
    return {"total": batch.total, "completed": done, "failed": ended - done}


def eta_seconds(batch: Batch, progress: dict[str, int]) -> float | None:
    """The time the lines not yet ended should take, from the recent job durations of their model and the live
    workers (other work on the queue, and other keys' batches taking turns, make it longer)."""
    left = progress["total"] - progress["completed"] - progress["failed"]
    model = db.session.scalar(select(Job.model).where(Job.batch_id == batch.id, Job.status.in_(UNFINISHED)).limit(1))
    per_line = eta_per_position(model) if model else None
    return left * per_line if left and per_line is not None else None


def cancel(batch: Batch) -> Batch:
    """in_progress -> cancelling: lines not started are cancelled at once, running ones are asked to stop; the
    batch ends `cancelled` (with the answers it has) when the last one has ended."""
    if batch.status != "in_progress":
        raise APIError(409, "batch_not_cancellable", f"batch '{batch.id}' is {batch.status}")
    db.session.execute(update(Batch).where(Batch.id == batch.id, Batch.status == batch.status)
                       .values(status="cancelling", cancelling_at=utcnow()))
    db.session.commit()
    batch_lines.cancel_lines(batch.id)
    batch_lines.settle(batch.id)
    db.session.refresh(batch)
    return batch


def expire_overdue() -> int:
    """Batches past their completion window stop taking new lines: those not started are cancelled, the batch
    ends `expired` when the running ones have ended. Returns how many expired."""
    overdue = db.session.scalars(select(Batch.id).where(Batch.status == "in_progress", Batch.expired_at.is_(None),
                                                        Batch.expires_at < utcnow())).all()
    for batch_id in overdue:
        db.session.execute(update(Batch).where(Batch.id == batch_id).values(expired_at=utcnow()))
        db.session.commit()
        batch_lines.cancel_lines(batch_id)
        batch_lines.settle(batch_id)
    return len(overdue)


def maintain() -> None:
    """The reconciler's part (in every worker): discard batches whose making was cut off, expire overdue ones, and
    end any whose last line ended while nobody settled it (a worker that died between the two)."""
    discard_abandoned()
    expire_overdue()
    for batch_id in db.session.scalars(select(Batch.id).where(Batch.status.in_(RUNNING))).all():
        batch_lines.settle(batch_id)


# How the API shows a batch -------------------------------------------------------------------------------------


def batch_json(batch: Batch) -> dict:
    stamps = {name: _epoch(getattr(batch, name)) for name in (
        "created_at", "expires_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
        "cancelling_at", "cancelled_at")}
    return {"id": batch.id, "object": "batch", "endpoint": batch.endpoint,
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "input_file_id": batch.input_file_id, "completion_window": batch.completion_window,
            "status": batch.status, "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
            **stamps, "request_counts": counts(batch), "metadata": batch.meta}


def _epoch(moment: datetime | None) -> int | None:
    return int((moment - datetime(1970, 1, 1)).total_seconds()) if moment else None
