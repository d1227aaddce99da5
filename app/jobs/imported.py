"""Conversations whose turns all ended elsewhere (an imported file): stored a chunk at a time under a placeholder
id, given their owner at the end, and removed by the reconciler when their import died half-way."""

import secrets
import time
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from app import logs
from app.extensions import db
from app.jobs.store import in_turn, insert_jobs, insert_messages
from app.models import Conversation, Job, Message


class ConversationExists(Exception):
    """The owner already has a conversation with this id."""


IMPORT_CHUNK = 1000  # turns written per transaction
IMPORTING = "importing-"  # the session id of a conversation being imported: importing-<epoch seconds>-<its id>
UNFINISHED_IMPORT = timedelta(minutes=10)  # one still being imported this long lost its request


def add_ended(conversation: Conversation, turns: list[tuple[dict | None, str | None, str | None]]) -> None:
    """Store a conversation whose turns all ended elsewhere (an imported file), and enqueue nothing. Each turn is
    (its finished job's columns, the user's message, the answer), in order: a turn's place is its job's id. A turn
    without a job is a message kept without one. Raises ConversationExists, storing nothing, when the owner already
    has a conversation with its session id.

    10,000 turns in one transaction held SQLite (one writer at a time) for seconds, so the turns are written
    IMPORT_CHUNK at a time (`in_turn`) into a conversation nobody owns yet, under a placeholder id; one last short
    transaction gives it its owner and id. A crash half-way leaves only the placeholder, which the reconciler
    removes (`remove_unfinished_imports`)."""
    owner, session_id = conversation.user_id, conversation.session_id
    if db.session.scalar(select(Conversation.id).where(Conversation.user_id == owner,
                                                       Conversation.session_id == session_id)):
        raise ConversationExists(f"there is already a conversation '{session_id}'")
    conversation.id = secrets.token_hex(8)
    conversation.user_id, conversation.session_id = None, f"{IMPORTING}{int(time.time())}-{conversation.id}"
    request_id = logs.request_id.get()
    try:
        with in_turn():
            db.session.add(conversation)
            db.session.commit()
        for start in range(0, len(turns), IMPORT_CHUNK):
            with in_turn():
                _add_turns(conversation.id, turns[start:start + IMPORT_CHUNK], request_id)
                db.session.commit()
        with in_turn():
            db.session.execute(update(Job).where(Job.conversation_id == conversation.id).values(user_id=owner))
            conversation.user_id, conversation.session_id = owner, session_id
            db.session.commit()
    except BaseException as failed:
        db.session.rollback()
        _remove_conversations([conversation.id])
        if isinstance(failed, IntegrityError):  # the same id was made meanwhile
            raise ConversationExists(f"there is already a conversation '{session_id}'") from None
        raise


def _add_turns(conversation_id: str, turns: list[tuple[dict | None, str | None, str | None]],
               request_id: str | None) -> None:
    job_ids = iter(insert_jobs([{**job, "conversation_id": conversation_id, "request_id": request_id}
                                for job, _, _ in turns if job is not None]))
    messages = []
    for job, user, assistant in turns:
        job_id = next(job_ids) if job is not None else None
        messages += [{"conversation_id": conversation_id, "role": role, "content": text, "job_id": job_id}
                     for role, text in (("user", user), ("assistant", assistant)) if text is not None]
    insert_messages(messages)


def remove_unfinished_imports() -> int:
    """Remove the conversations an import began and did not finish (its request died) UNFINISHED_IMPORT ago, with
    what it wrote of them. Returns how many."""
    before = time.time() - UNFINISHED_IMPORT.total_seconds()
    unfinished = [conversation_id for conversation_id, session_id in db.session.execute(
        select(Conversation.id, Conversation.session_id).where(Conversation.user_id.is_(None),
                                                               Conversation.session_id.startswith(IMPORTING)))
        if int(session_id.split("-")[1]) < before]
    _remove_conversations(unfinished)
    return len(unfinished)


def _remove_conversations(conversation_ids: list[str]) -> None:
    """With their jobs and messages, deleted outright rather than left to ON DELETE CASCADE (which SQLite applies
    only where the connection turned foreign keys on, and did not in tests)."""
    for table in (Message, Job, Conversation):
        column = table.id if table is Conversation else table.conversation_id
        db.session.execute(delete(table).where(column.in_(conversation_ids)))
    db.session.commit()
