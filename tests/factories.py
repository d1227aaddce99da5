"""What the tests share: rows (users, conversations, turns in each state), hostile text, probes of what came out
(an answer bubble in a page, the SQL statements a request ran)."""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import bcrypt
from sqlalchemy import event, select

from app.extensions import db
from app.jobs.store import title
from app.models import NO_PASSWORD, Conversation, Job, JobStatus, Message, User
from config import DEFAULT_MODEL_KEY

NAME, PASSWORD = "alice", "correct horse battery"
MODEL = DEFAULT_MODEL_KEY
ATTACKS = ['<img src=x onerror="window.__xss=1">', "<script>window.__xss=1</script>"]


def add_user(name: str = NAME, password: str | None = PASSWORD, is_admin: bool = False) -> User:
    # Few bcrypt rounds: the cost is stored in the hash, so logging in stays fast in tests.
    password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode() if password else NO_PASSWORD
    user = User(name=name, password_hash=password_hash, is_admin=is_admin)
    db.session.add(user)
    db.session.commit()
    return user


def first_user_id() -> int | None:
    """The owner rows get unless a test names one: in the UI tests, the signed-in user."""
    return db.session.scalar(select(User.id).order_by(User.id).limit(1))


def add_conversation(id: str, title: str, minutes_ago: int = 0, messages: tuple[str, ...] = (),
                     user_id: int | None = None) -> None:
    moment = datetime(2026, 1, 1) - timedelta(minutes=minutes_ago)
    db.session.add(Conversation(id=id, session_id=id, title=title, updated_at=moment, created_at=moment,
                                user_id=user_id or first_user_id()))
    db.session.add_all(Message(conversation_id=id, role="user", content=text) for text in messages)
    db.session.commit()


def add_turn(conversation_id: str, prompt: str, status: JobStatus, reply: str | None = None, **job_fields) -> Job:
    """A turn as the worker leaves it (written directly, to reach each state without waiting for one)."""
    job_fields.setdefault("user_id", first_user_id())
    job_fields.setdefault("model", MODEL)
    if db.session.get(Conversation, conversation_id) is None:
        db.session.add(Conversation(id=conversation_id, session_id=conversation_id, title=title(prompt),
                                    user_id=job_fields["user_id"]))
    job = Job(conversation_id=conversation_id, user_input=prompt, status=status.value, **job_fields)
    db.session.add(job)
    db.session.flush()
    db.session.add(Message(conversation_id=conversation_id, role="user", content=prompt, job_id=job.id))
    if reply is not None:
        db.session.add(Message(conversation_id=conversation_id, role="assistant", content=reply, job_id=job.id))
    db.session.commit()
    return job


def bubble(html: str, job_id: int) -> str:
    """The answer bubble of one job in a page."""
    return re.search(rf'<li id="job-{job_id}".*?</li>', html, re.S).group(0)


@contextmanager
def recorded_statements() -> Iterator[list[str]]:
    """The SQL statements run inside the block, by any session of the current app."""
    statements: list[str] = []

    def record(connection, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def conversation_file(conversation_id: str, *turns: tuple[str, str]) -> dict:
    """A conversation file as GET /api/conversations/{id}/export gives it: a finished job for each (prompt, answer)."""
    moment = "2026-01-01T12:00:00.000Z"
    usage = {"prompt_tokens": 12, "completion_tokens": 5, "first_token_ms": 40, "duration_ms": 0}
    return {"format": "llamalith.conversation", "version": 1, "exported_at": moment, "conversation_id": conversation_id,
            "title": turns[0][0][:80] if turns else "", "created_at": moment, "updated_at": moment,
            "turns": [{"user": prompt, "assistant": answer, "job": {
                "kind": "chat", "model": MODEL, "system_prompt": None, "params": {}, "status": "done", "error": None,
                "created_at": moment, "started_at": moment, "processed_at": moment, "usage": usage}}
                for prompt, answer in turns]}
