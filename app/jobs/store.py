"""Writing jobs with their conversations and messages: in short transactions, one writer at a time on SQLite, and
many rows in a few statements."""

import fcntl
import functools
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy import bindparam, insert, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import make_transient_to_detached

from app import logs
from app.extensions import db
from app.models import Conversation, Job, JobKind, JobStatus, Message, utcnow

_SQLITE_WRITER = threading.Lock()


def one_writer():
    """SQLite lets one writer in at a time and the others sleep and retry, in no order: under load some submits
    waited over a second. Writers queue here instead, in turn. (PostgreSQL needs no such thing.)"""
    bind = db.session.get_bind()
    return _sqlite_writer(bind.url.database) if bind.dialect.name == "sqlite" else nullcontext()


@contextmanager
def _sqlite_writer(database: str | None) -> Iterator[None]:
    """This process's writers in turn (a lock), then the processes' in turn (an flock on a file beside the database:
    two web processes each sleeping in SQLite's busy handler took the submit's p99 from 93 to 270 ms)."""
    with _SQLITE_WRITER:
        if database in (None, "", ":memory:"):  # no file: no other process can reach it
            yield
            return
        descriptor = _lock_file(database, os.getpid())
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)


@functools.cache
def _lock_file(database: str, pid: int) -> int:
    """A descriptor opened by this process: an flock belongs to the open file, which a forked process shares."""
    return os.open(f"{database}-writers", os.O_RDWR | os.O_CREAT, 0o600)


@contextmanager
def in_turn() -> Iterator[None]:
    """One short write transaction of a long series (a batch file's lines, an imported conversation's turns) as
    `one_writer`; after it the series pauses as long as it took, so that other writers, this process's and the
    others', get the database at least half the time."""
    began = time.monotonic()
    with one_writer():
        yield
    time.sleep(time.monotonic() - began)


def insert_job(conversation_id: str, user_input: str, model: str, system_prompt: str | None, params: dict,
               priority: str, api_key_id: int | None, user_id: int | None, history: list | None = None,
               **extra) -> dict:
    """Insert a new queued job and its user message, in Core; the job's values, with its id (`written` makes the
    job of them once the transaction is committed)."""
    values = {"kind": JobKind.CHAT.value, **extra, "conversation_id": conversation_id, "user_input": user_input,
              "model": model, "system_prompt": system_prompt, "params": params, "priority": priority,
              "api_key_id": api_key_id, "user_id": user_id, "history": history, "request_id": logs.request_id.get(),
              "status": JobStatus.QUEUED.value, "attempts": 0, "held": False, "callback_attempts": 0,
              "created_at": utcnow()}
    values["id"] = db.session.connection().scalar(_INSERT_JOB, values)
    insert_messages([{"conversation_id": conversation_id, "role": "user", "content": user_input,
                      "job_id": values["id"]}])
    return values


# Built once, as app/submissions.py's statements: every submit runs both, and building them cost a fifth of running
# them.
_INSERT_JOB = insert(Job.__table__).returning(Job.id)
_INSERT_MESSAGE = insert(Message.__table__)


def written(values: dict) -> Job:
    """The job `insert_job` wrote, in the session as if just loaded: what it was not given loads on first use.

    Made after the commit, not flushed by the ORM: the flush of one object, and then the object made inside the
    write transaction, were most of the time a submit held SQLite's write lock, which every submit waits for in
    turn (docs/benchmarks.md, the web tier)."""
    job = Job(**values)
    make_transient_to_detached(job)
    db.session.add(job)
    return job


# SQLAlchemy cannot cache the compiled form of its dialects' upserts, and compiling this one was a sixth of a
# submit; SQLite and PostgreSQL spell it alike, so it is written once, with each column's type for its value.
_UPSERT_CONVERSATION = text(
    "INSERT INTO conversations (id, session_id, title, user_id, created_at, updated_at) "
    "VALUES (:id, :session_id, :title, :user_id, :created_at, :updated_at) "
    "ON CONFLICT (user_id, session_id) DO UPDATE SET updated_at = excluded.updated_at RETURNING id"
).bindparams(*(bindparam(column.key, type_=column.type) for column in Conversation.__table__.c))


def ensure_conversation(owner: int, session_id: str, title: str, conversation_id: str) -> str:
    """The internal id of the owner's conversation `session_id`, made with `conversation_id` if new: an upsert,
    because two first turns may arrive at once."""
    now = utcnow()
    return db.session.connection().scalar(_UPSERT_CONVERSATION, {
        "id": conversation_id, "session_id": session_id, "title": title, "user_id": owner, "created_at": now,
        "updated_at": now})


def new_conversation_id() -> str:
    return secrets.token_hex(8)


def title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 80 else line[:79] + "…"


def ensure_conversations(owner: int, titles: dict[str, str]) -> dict[str, str]:
    """The internal ids of the owner's conversations named by `titles`' session ids, those that are new made with
    that title, in one upsert."""
    dialect_insert = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}[db.session.get_bind().dialect.name]
    now = utcnow()
    upsert = dialect_insert(Conversation.__table__).on_conflict_do_update(index_elements=["user_id", "session_id"],
                                                                          set_={"updated_at": now})
    rows = [{"id": new_conversation_id(), "session_id": session_id, "title": title, "user_id": owner,
             "created_at": now, "updated_at": now} for session_id, title in titles.items()]
    return dict(db.session.execute(upsert.returning(Conversation.session_id, Conversation.id), rows).all())


# Core inserts of many rows: SQLAlchemy sends them as a few multi-row INSERTs, without making an object of each.


def insert_jobs(rows: list[dict]) -> list[int]:
    """Job rows; their ids, in order. Each statement's rows are inserted, and numbered, in the order given, so the
    ids sorted are theirs in order (asking SQLAlchemy to match them up would make SQLite insert one row at a time)."""
    if not rows:
        return []
    return sorted(db.session.scalars(_INSERT_JOB, rows))


def insert_messages(rows: list[dict]) -> None:
    if rows:
        db.session.connection().execute(_INSERT_MESSAGE, rows if len(rows) > 1 else rows[0])
