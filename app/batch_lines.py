"""A batch's lines as jobs: stored held, a chunk at a time (the job core releases them: `jobs.release_lines`);
cancelled with their batch; and the batch settled, its output and error files written in the transaction that ends
it, once the last line has ended. app/batches.py makes batches and shows them; this is what becomes of their lines."""

import json
import secrets

from sqlalchemy import select, update

from app import logs
from app.extensions import db
from app.jobs.lifecycle import AlreadyFinished, QueueUnavailable, cancel, transition
from app.jobs.store import ensure_conversations, in_turn, insert_jobs, insert_messages, title
from app.models import Batch, Job, JobStatus, StoredFile, utcnow
from app.openai_format import completion, job_failure

UNFINISHED = (JobStatus.QUEUED.value, JobStatus.PROCESSING.value)
RUNNING = ("in_progress", "cancelling")  # a batch whose lines may still be running
ENDS = {"in_progress": "completed", "cancelling": "cancelled"}


def add_lines(owner: int, lines: list[tuple[dict, str]]) -> None:
    """Store some of a batch's lines (each a job's columns, and the session id of the owner's conversation it goes
    in) as held jobs with their user messages, in one short transaction of a few statements. They wait for their
    batch to be `in_progress` before `release_lines` enqueues any (app/batches.py writes a big file this way, a
    chunk at a time, so that other writers get in between)."""
    request_id = logs.request_id.get()
    with in_turn():
        titles = {session_id: title(job["user_input"]) for job, session_id in reversed(lines)}  # the first's title
        conversations = ensure_conversations(owner, titles)
        rows = [{**job, "conversation_id": conversations[session_id], "user_id": owner, "held": True,
                 "request_id": request_id} for job, session_id in lines]
        insert_messages([{"conversation_id": row["conversation_id"], "role": "user", "content": row["user_input"],
                           "job_id": job_id} for row, job_id in zip(rows, insert_jobs(rows))])
        db.session.commit()


def cancel_lines(batch_id: str) -> None:
    """Cancel a batch's lines that have not ended: the held ones at once, in one statement (they are not in
    Redis), the others one by one, without waiting for running ones to stop."""
    transition(Job.batch_id == batch_id, Job.held.is_(True), Job.status == JobStatus.QUEUED.value,
               status=JobStatus.CANCELLED.value, processed_at=utcnow(), result="", held=False)
    for job in db.session.scalars(select(Job).where(Job.batch_id == batch_id,
                                                    Job.status.in_([JobStatus.QUEUED.value,
                                                                    JobStatus.PROCESSING.value]))).all():
        try:
            cancel(job, wait_seconds=0)
        except (AlreadyFinished, QueueUnavailable):
            pass  # it ended meanwhile, or it stops at its time limit: either way it ends, and settles the batch


def settle(batch_id: str) -> None:
    """End the batch if none of its lines is queued or running any more: write its output and error files and set
    its final status, all in one transaction (so a crash leaves it running, and the next settle ends it)."""
    batch = db.session.get(Batch, batch_id)
    if batch is None or batch.status not in RUNNING or _unfinished(batch_id):
        return
    final = "expired" if batch.expired_at else ENDS[batch.status]
    now = utcnow()
    ended = db.session.execute(update(Batch).where(Batch.id == batch_id, Batch.status == batch.status)
                               .values(status=final, finalizing_at=now, **{f"{final}_at": now})).rowcount
    if not ended:
        db.session.rollback()
        return
    lines = db.session.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.id)).all()
    answered = [line for line in lines if line.status == JobStatus.DONE.value]
    batch.completed, batch.failed = len(answered), len(lines) - len(answered)
    batch.output_file_id = _write(batch, "output", [output_line(line) for line in answered])
    batch.error_file_id = _write(batch, "errors", [error_line(line, batch) for line in lines
                                                   if line.status != JobStatus.DONE.value])
    db.session.commit()


def _unfinished(batch_id: str) -> bool:
    return db.session.scalar(select(Job.id).where(Job.batch_id == batch_id, Job.status.in_(UNFINISHED)).limit(1)) \
        is not None


def _write(batch: Batch, kind: str, rows: list[dict]) -> str | None:
    if not rows:
        return None
    content = "".join(json.dumps(row) + "\n" for row in rows).encode()
    stored = StoredFile(id=f"file-{secrets.token_hex(12)}", user_id=batch.user_id, purpose="batch_output",
                        filename=f"{batch.id}_{kind}.jsonl", bytes=len(content), content=content)
    db.session.add(stored)
    return stored.id


def output_line(job: Job) -> dict:
    return {"id": f"batch_req_{job.id}", "custom_id": job.custom_id,
            "response": {"status_code": 200, "request_id": job.request_id or f"job-{job.id}",
                         "body": completion(job, job.model, job.params)}, "error": None}


def error_line(job: Job, batch: Batch) -> dict:
    """A line that was not answered: its failure as /v1/chat/completions would have answered it, or why it never
    ran (the batch was cancelled or expired first)."""
    row = {"id": f"batch_req_{job.id}", "custom_id": job.custom_id, "response": None, "error": None}
    if job.status == JobStatus.CANCELLED.value and job.started_at is None:
        code = "batch_expired" if batch.expired_at else "batch_cancelled"
        row["error"] = {"code": code, "message": "the request was not run: the batch was "
                                                 f"{'past its completion window' if batch.expired_at else 'cancelled'}"}
        return row
    failure = job_failure(job)
    row["response"] = {"status_code": failure.status, "request_id": job.request_id or f"job-{job.id}",
                       "body": {"error": {"message": failure.message, "type": "server_error", "code": failure.code,
                                          "param": None}}}
    return row
