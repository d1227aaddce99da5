"""Tables. A job row is the source of truth for a generation; Redis only carries it to a worker."""

import enum
import re
from datetime import datetime, timezone
from itertools import groupby
from typing import Any

import bcrypt

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.llm import Turn


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def iso(moment: datetime | None) -> str | None:
    """A stored (naive UTC) time as JSON shows it."""
    return moment.isoformat(timespec="milliseconds") + "Z" if moment else None


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.ERROR, JobStatus.CANCELLED)


class JobKind(str, enum.Enum):
    """What a job computes: a chat answer (its text), or embeddings (a vector per input, app/embeddings.py)."""

    CHAT = "chat"
    EMBEDDING = "embedding"


class Priority(str, enum.Enum):
    INTERACTIVE = "interactive"
    BATCH = "batch"


# A password hash no password matches: for an account made by a migration, until `users passwd` sets one.
NO_PASSWORD = "!"


class User(db.Model):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(100))
    is_admin: Mapped[bool] = mapped_column(default=False)  # sees every user's conversations and jobs in the UI
    disabled: Mapped[bool] = mapped_column(default=False)  # can neither sign in nor use its API keys
    # Part of the session's user id, so bumping it (logout, password change, disable) ends every copied session.
    session_version: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Flask-Login's protocol, written out rather than inherited from UserMixin to keep the table plain.
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return not self.disabled

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"

    def set_password(self, password: str) -> None:
        """Store its bcrypt hash; sessions signed in with the old password end."""
        self.password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
        self.session_version = (self.session_version or 0) + 1


class ApiKey(db.Model):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    # Whether requests with this key may ask for interactive priority (ahead of batch work).
    interactive: Mapped[bool] = mapped_column(default=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    rate_limit: Mapped[str | None] = mapped_column(String(100))  # e.g. "60/minute"; None: API_RATE_LIMIT
    max_queued: Mapped[int | None]  # jobs this key may have waiting; None: MAX_QUEUED_PER_KEY
    # Signs the webhooks of this key's jobs (HMAC-SHA256); shown once when the key is made. None for keys made
    # before webhooks existed: they cannot ask for callbacks.
    webhook_secret: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    user: Mapped[User] = relationship(lazy="joined")


class Conversation(db.Model):
    """`id` is internal (the UI's URLs); `session_id` is the owner's name for it (the API's), unique per user."""

    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("user_id", "session_id", name="uq_conversations_user_session"),)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(String(200), default="")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    messages: Mapped[list["Message"]] = relationship(
        back_populates="conversation", order_by="Message.id", cascade="all, delete-orphan", passive_deletes=True
    )
    user: Mapped[User | None] = relationship()


class Message(db.Model):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("job_id", "role", name="uq_messages_job_role"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    conversation: Mapped[Conversation] = relationship(back_populates="messages")


def conversation_turns(conversation_id: str, before_job_id: int | None = None) -> list[Turn]:
    """The conversation as turns, in job order (the user's message before the answer). A job still running, or
    one that ended without text, has no answer yet; a message whose job row is gone stands as its own turn."""
    # NULLS FIRST says what SQLite does unasked; PostgreSQL would put the messages without a job last.
    query = select(Message).where(Message.conversation_id == conversation_id).order_by(
        Message.job_id.asc().nulls_first(), Message.id)
    if before_job_id is not None:
        query = query.where(Message.job_id < before_job_id)
    turns = []
    for key, messages in groupby(db.session.scalars(query), key=_turn_key):
        by_role = {message.role: message.content for message in messages}
        turns.append(Turn(by_role.get("user"), by_role.get("assistant"), key if isinstance(key, int) else None))
    return turns


def _turn_key(message: Message) -> int | str:
    return message.job_id if message.job_id is not None else f"message-{message.id}"


class Job(db.Model):
    __tablename__ = "jobs"
    # Queue order, positions and recent durations walk a model's jobs of one status by id; the per-key queue cap
    # counts one key's queued jobs that are not a batch's lines (in the index alone); the Queue page's last hour
    # reads the jobs that ended lately or have not: each is an index range, however many jobs there are in all.
    __table_args__ = (Index("ix_jobs_model_status_id", "model", "status", "id"),
                      # A queued job's place: one count over this index, the table never read (app/progress.py).
                      Index("ix_jobs_line", "model", "status", "held", "id", "priority", "created_at", "batch_id"),
                      Index("ix_jobs_processed_at", "processed_at"),
                      Index("ix_jobs_key_status_batch", "api_key_id", "status", "batch_id"),
                      Index("ix_jobs_held_key_id", "held", "api_key_id", "id"),
                      Index("ix_jobs_batch_status", "batch_id", "status"),
                      UniqueConstraint("api_key_id", "idempotency_key", name="uq_jobs_key_idempotency"))
    id: Mapped[int] = mapped_column(primary_key=True)
    # A column rather than a marker in `params`: every reader (the worker, the job's JSON, regenerate, the pages)
    # asks it first, and params stay generation settings only. An embedding job's `user_input` is its inputs as a
    # JSON list of strings and its `result` its vectors (app/embeddings.py).
    kind: Mapped[str] = mapped_column(String(16), default=JobKind.CHAT.value, server_default=JobKind.CHAT.value)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    user_input: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(80))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    # Earlier turns the client sent along ([user, assistant] pairs, OpenAI-style requests); when set, the prompt
    # uses them instead of the conversation's stored turns.
    history: Mapped[list[list[str | None]] | None] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    priority: Mapped[str] = mapped_column(String(16), default=Priority.BATCH.value)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value, index=True)
    result: Mapped[str | None] = mapped_column(Text)
    # What the answer cost, as the worker measured it (the job's JSON, /metrics).
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    first_token_ms: Mapped[int | None]
    duration_ms: Mapped[int | None]  # the worker's generation time
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(40))
    # Who runs it: the worker holding it and when it last said so; the attempts so far and when the next may start.
    worker: Mapped[str | None] = mapped_column(String(120))
    heartbeat_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    retry_at: Mapped[datetime | None]
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)  # the owner
    request_id: Mapped[str | None] = mapped_column(String(64))  # of the request that made it (app/logs.py)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]
    # A client's Idempotency-Key and a digest of the request it came with: a repeat within 24 h gets this job.
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_digest: Mapped[str | None] = mapped_column(String(64))
    # Where the job's JSON is POSTed when it ends, and how that went: pending (until delivered), delivered, failed.
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    callback_status: Mapped[str | None] = mapped_column(String(16))
    callback_attempts: Mapped[int] = mapped_column(default=0)
    callback_last_status: Mapped[int | None]  # the receiver's last HTTP status
    callback_error: Mapped[str | None] = mapped_column(Text)
    callback_next_at: Mapped[datetime | None]  # no delivery before this (back-off between attempts)
    # A line of a batch (app/batches.py): its batch, the client's id for it, and whether it still waits in the
    # database for its key's turn (held lines are not in Redis; jobs.release_lines moves them there, fairly).
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    custom_id: Mapped[str | None] = mapped_column(String(512))
    held: Mapped[bool] = mapped_column(default=False)
    # The template version its system prompt was rendered from, and the values filled into it.
    prompt_template_id: Mapped[int | None] = mapped_column(ForeignKey("prompt_templates.id", ondelete="SET NULL"))
    prompt_variables: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # Loaded with the job: every answer names the conversation by its session id.
    conversation: Mapped[Conversation] = relationship(lazy="joined")
    prompt_template: Mapped["PromptTemplate | None"] = relationship()

    @property
    def finished(self) -> bool:
        return JobStatus(self.status).finished


# A prompt template's variable: `{{ name }}`.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")


def template_ref(name: str, version: int) -> str:
    """How answers name a template's version (a job's JSON reads it without loading the template)."""
    return f"{name}@{version}"


class PromptTemplate(db.Model):
    """One version of a user's named system prompt. An edit adds the next version; no row is ever changed, so a
    job's `prompt_template_id` keeps pointing at the exact text it was rendered from."""

    __tablename__ = "prompt_templates"
    __table_args__ = (UniqueConstraint("user_id", "name", "version", name="uq_prompt_templates_user_name_version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(80))
    version: Mapped[int]
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def ref(self) -> str:
        return template_ref(self.name, self.version)

    @property
    def variables(self) -> list[str]:
        """The variable names its text asks for, each once, in order of first use."""
        return list(dict.fromkeys(PLACEHOLDER.findall(self.text)))


class StoredFile(db.Model):
    """A file of the OpenAI Files API: a batch's input (uploaded) or its output and errors (written when it ends).
    Kept in the database, so every web node and worker sees it."""

    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int]
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # loaded only when asked for
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Batch(db.Model):
    """A batch of chat completions (OpenAI's Batch API): each line of its input file is a job at batch priority."""

    __tablename__ = "batches"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    input_file_id: Mapped[str] = mapped_column(String(40))
    output_file_id: Mapped[str | None] = mapped_column(String(40))
    error_file_id: Mapped[str | None] = mapped_column(String(40))
    endpoint: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(8))
    meta: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON)  # the client's; `metadata` is SQLAlchemy's
    status: Mapped[str] = mapped_column(String(16))
    errors: Mapped[list[dict] | None] = mapped_column(JSON)  # why validation failed, with line numbers
    total: Mapped[int] = mapped_column(default=0)
    # Counted when the batch ends, so they stay true if a line's conversation is deleted later.
    completed: Mapped[int | None]
    failed: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    expires_at: Mapped[datetime]
    in_progress_at: Mapped[datetime | None]
    finalizing_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    cancelling_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
