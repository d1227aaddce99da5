"""Conversations as files: the JSON form (versioned, and what an import reads back turn for turn) and a Markdown
transcript for people. The API and the UI both export and import through here; a file that cannot be imported is a
`Refused` that names the problem by its path in the document, and nothing of it is stored."""

import json
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from flask import Response
from pydantic import (AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, Strict,
                      ValidationError, model_validator)
from sqlalchemy import select

from app import job_views, jobs, progress
from app.errors import validation_message
from app.extensions import db
from app.llm import GenerationParams, Turn
from app.models import Conversation, Job, conversation_turns, iso, utcnow
from app.submissions import MAX_INPUT_CHARS, MAX_SYSTEM_PROMPT_CHARS, SESSION_ID, Refused

FORMAT = "llamalith.conversation"
VERSION = 1
MAX_TURNS = 10_000
MAX_ERROR_CHARS = 10_000
# What a turn's job keeps of the job as GET /api/jobs/{id} shows it: no ids, queue or delivery fields, and the
# system prompt's text rather than the template it came from (templates are their owner's, on this server).
JOB_FIELDS = ("kind", "model", "system_prompt", "params", "status", "error", "created_at", "started_at",
              "processed_at", "usage")
MEDIA_TYPES = {"json": "application/json", "md": "text/markdown; charset=utf-8"}


# The JSON form, as an import reads it --------------------------------------------------------------------
# (The JSON parser refuses lone surrogates and bytes that are not UTF-8: every text in a parsed file is valid Unicode.)

# Times are RFC 3339 strings, as exported (pydantic alone would also read 1700000000 as one).
RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})")


def _rfc3339(value: Any) -> Any:
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise ValueError("must be a time like 2026-01-31T12:00:00.000Z")
    return value


def _utc(moment: datetime) -> datetime:
    """Times are stored as naive UTC."""
    try:
        return moment.astimezone(timezone.utc).replace(tzinfo=None)
    except OverflowError:
        raise ValueError("is out of range") from None


def _generation_params(params: dict[str, Any]) -> dict[str, Any]:
    """Kept as written (the settings the job was asked for), once GenerationParams has checked them."""
    try:
        GenerationParams.model_validate(params, strict=True)
    except ValidationError as exc:
        raise ValueError(validation_message(exc)) from None
    return params


# Not strict: the string _rfc3339 let through is parsed into a time.
Moment = Annotated[AwareDatetime, Strict(False), BeforeValidator(_rfc3339), AfterValidator(_utc)]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]


class FilePart(BaseModel):
    """Unknown fields are refused and no value is converted from another type."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ConversationJobError(FilePart):
    code: str = Field(min_length=1, max_length=40)
    message: str = Field(max_length=MAX_ERROR_CHARS)


class ConversationUsage(FilePart):
    """As GET /api/jobs/{id} shows it; each field is the job's column of that name."""

    prompt_tokens: Count | None
    completion_tokens: Count | None
    first_token_ms: Count | None
    duration_ms: Count | None


class ConversationJob(FilePart):
    """The job that answered a turn. Only ended turns are in a file."""

    # Files written before jobs had kinds hold chat answers only.
    kind: Literal["chat", "embedding"] = "chat"
    model: str = Field(min_length=1, max_length=80)
    system_prompt: str | None = Field(max_length=MAX_SYSTEM_PROMPT_CHARS)
    params: Annotated[dict[str, Any], AfterValidator(_generation_params)] = Field(
        description="the generation settings the job was asked for, as in POST /api/submit")
    status: Literal["done", "error", "cancelled"]
    error: ConversationJobError | None
    created_at: Moment
    started_at: Moment | None
    processed_at: Moment | None
    usage: ConversationUsage


class ConversationTurn(FilePart):
    """The user's message and the answer (null when the job ended without one), and the job that answered; a turn
    without a job is a single message whose job row is gone."""

    user: str | None = Field(max_length=MAX_INPUT_CHARS)
    assistant: str | None = Field(max_length=MAX_INPUT_CHARS)
    job: ConversationJob | None

    @model_validator(mode="after")
    def _whole(self) -> "ConversationTurn":
        if self.job is not None and self.user is None:
            raise ValueError("a turn with a job needs the user's message")
        if self.job is None and (self.user is None) == (self.assistant is None):
            raise ValueError("a turn without a job is one message: either user or assistant")
        return self


class ConversationFile(FilePart):
    """A conversation as a file (GET /api/conversations/{id}/export); POST /api/conversations/import reads it."""

    format: Literal["llamalith.conversation"]
    version: Literal[1]
    exported_at: Moment
    conversation_id: str = Field(pattern=f"^{SESSION_ID.pattern}$")
    title: str = Field(max_length=200)
    created_at: Moment
    updated_at: Moment
    turns: list[ConversationTurn] = Field(max_length=MAX_TURNS)


# Export --------------------------------------------------------------------------------------------------


def document(conversation: Conversation) -> dict[str, Any]:
    """The JSON form: every turn that has ended, in order. A turn still queued or being written is left out."""
    turns = conversation_turns(conversation.id)
    ended = {job.id: job for job in db.session.scalars(
        select(Job).where(Job.id.in_([turn.job_id for turn in turns if turn.job_id]))) if job.finished}
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": iso(utcnow()),
        "conversation_id": conversation.session_id,
        "title": conversation.title,
        "created_at": iso(conversation.created_at),
        "updated_at": iso(conversation.updated_at),
        "turns": [_turn_json(turn, ended.get(turn.job_id)) for turn in turns
                  if turn.job_id is None or turn.job_id in ended],
    }


def _turn_json(turn: Turn, job: Job | None) -> dict[str, Any]:
    shown = job_views.job_json(job, progress.Progress()) if job else None  # an ended job has no progress to look up
    return {"user": turn.user, "assistant": turn.assistant,
            "job": {name: shown[name] for name in JOB_FIELDS} if shown else None}


def markdown(found: dict[str, Any]) -> str:
    """A transcript of the JSON form for people: the title, then each turn's prompt and answer under who wrote it,
    with the system prompt wherever it changes."""
    lines = [f"# {found['title'] or found['conversation_id']}", "",
             f"Conversation `{found['conversation_id']}`, started {_when(found['created_at'])}, exported from "
             f"Llamalith {_when(found['exported_at'])}.", ""]
    system_prompt = None
    for turn in found["turns"]:
        job = turn["job"]
        lines += ["---", ""]
        if job and job["system_prompt"] != system_prompt:
            system_prompt = job["system_prompt"]
            lines += [_quoted("System prompt: " + (system_prompt or "none")), ""]
        if turn["user"] is not None:
            lines += ["**You**", "", turn["user"], ""]
        if job or turn["assistant"] is not None:
            lines += [f"**{job['model'] if job else 'Assistant'}**", ""]
            lines += [line for text in (turn["assistant"], _ending(turn)) if text for line in (text, "")]
    return "\n".join(lines)


def _when(moment: str) -> str:
    return f"{datetime.fromisoformat(moment):%Y-%m-%d %H:%M} UTC"


def _quoted(text: str) -> str:
    return "\n".join("> " + line for line in text.splitlines())


def _ending(turn: dict[str, Any]) -> str | None:
    """How an answer ended, when it did not end well (the chat's own words)."""
    job = turn["job"] or {}
    if job.get("status") == "error":
        return f"*Error: {job['error']['message'] if job['error'] else 'the job failed'}*"
    if job.get("status") == "cancelled":
        return "*Stopped: the text above is what was written until then.*" if turn["assistant"] else \
            "*Stopped before any text was written.*"
    return None


def download(conversation: Conversation, kind: str) -> Response:
    """The conversation as an attachment: `kind` is "json" (importable) or "md"."""
    if kind not in MEDIA_TYPES:
        raise Refused("invalid_request", "format must be 'json' or 'md'")
    found = document(conversation)
    body = json.dumps(found, ensure_ascii=False, indent=2) if kind == "json" else markdown(found)
    return Response(body, content_type=MEDIA_TYPES[kind],
                    headers={"Content-Disposition": f'attachment; filename="{_filename(found)}.{kind}"'})


def _filename(found: dict[str, Any]) -> str:
    """The title in plain ASCII letters and digits (a name every system and header takes), else the id (which
    starts with one)."""
    slugs = (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60].strip("-")
             for name in (found["title"], found["conversation_id"]))
    return next(slug for slug in slugs if slug)


# Import --------------------------------------------------------------------------------------------------


def parse(raw: bytes) -> ConversationFile:
    """The whole file, checked; the first problem found is refused with its path."""
    try:
        return ConversationFile.model_validate_json(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "json_invalid":
            raise Refused("invalid_json", f"the file is not JSON: {error['msg'].removeprefix('Invalid JSON: ')}") \
                from None
        raise Refused("invalid_request", validation_message(exc, whole="the file")) from None


def store(owner: int, file: ConversationFile, session_id: str | None = None) -> Conversation:
    """The file as the owner's conversation `session_id` (by default the file's own id): each turn a finished job
    with its messages, as the worker would have left it, so the chat shows it, the next prompt has it in its
    history and an export gives the file back. Raises jobs.ConversationExists when the owner has that id already."""
    conversation = Conversation(session_id=session_id or file.conversation_id, title=file.title, user_id=owner,
                                created_at=file.created_at, updated_at=file.updated_at)
    jobs.add_ended(conversation, [(_job(turn), turn.user, turn.assistant) for turn in file.turns])
    return conversation


def _job(turn: ConversationTurn) -> dict[str, Any] | None:
    """The columns of a finished job row from the file's: no worker ran it here, so it has no attempts."""
    if turn.job is None:
        return None
    job, error = turn.job, turn.job.error
    return dict(kind=job.kind, user_input=turn.user, model=job.model, system_prompt=job.system_prompt,
                params=job.params, status=job.status, result=turn.assistant or "",
                error_code=error.code if error else None, error=error.message if error else None, attempts=0,
                created_at=job.created_at, started_at=job.started_at, processed_at=job.processed_at,
                **job.usage.model_dump())
