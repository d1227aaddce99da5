"""POST /api/chat and POST /api/generate: Ollama's wire format over Llamalith's queue, streamed as NDJSON (one JSON
object per line, the last `done: true` with the job's counts and durations) or, with `"stream": false`, whole.

Each call is a job like any other: on /jobs and in GET /api/jobs, its id in the `X-Llamalith-Job-Id` header, run to
the end even if the client goes away. The request is the whole prompt (Ollama's contract); the conversation it lands
in only groups calls for people to read: `X-Llamalith-Conversation: <id>` names it."""

import json
import secrets
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

from flask import Response, g, request, stream_with_context

from app import follow, intake, request_body, submissions, tool_calls
from app.errors import APIError
from app.keys import presented_key, take_reader_slot
from app.models import Job, JobStatus, Priority
from app.ollama import bp, wire
from app.ollama.models import offered
from app.openai_format import finish_reason, job_failure

CONVERSATION_HEADER = "X-Llamalith-Conversation"
NDJSON = "application/x-ndjson"
MILLION = 1_000_000  # nanoseconds in a millisecond


@bp.post("/api/chat")
def chat():
    return answer(wire.ChatRequest, wire.CHAT_FIELDS, lambda text: {"message": {"role": "assistant", "content": text}})


@bp.post("/api/generate")
def generate():
    return answer(wire.GenerateRequest, wire.GENERATE_FIELDS, lambda text: {"response": text})


def answer(kind: type[wire.Request], fields: set[str], content: Callable[[str], dict]):
    """The request's job, followed to its end, as Ollama's answer; `content` puts a piece of text in the answer's
    shape. A request without a prompt only asks Ollama to load the model: here it is always loaded, and no job."""
    data = request_body.json_body()
    body = wire.parse(data, kind, fields)
    model = offered(body.model)  # in Ollama's words; intake would refuse it too, with the same status
    if not (body.messages if isinstance(body, wire.ChatRequest) else body.prompt):
        return {"model": model, "created_at": _now(), **content(""), "done": True, "done_reason": "load"}
    give_back = take_reader_slot("retry shortly")
    try:
        job, replayed = intake.submit(wire.submission(
            body, owner=g.api_key.user_id, session_id=session_id(),
            priority=Priority.INTERACTIVE.value if g.api_key.interactive else Priority.BATCH.value,
            api_key=g.api_key, idempotency=intake.idempotency(request.headers.get("Idempotency-Key"), data)))
    except BaseException:
        give_back()
        raise
    overrides = wire.params(body.options, body.format)
    tools = body.offered_tools() if isinstance(body, wire.ChatRequest) else []
    headers = {"X-Llamalith-Job-Id": str(job.id)}
    if replayed:  # as on POST /api/submit: the answer comes from the job an earlier request made
        headers["Idempotent-Replayed"] = "true"
    if body.stream:
        lines = stream_with_context(streamed(job.id, job.model, overrides, content, tools, presented_key()))
        response = Response(lines, mimetype=NDJSON, headers={**headers, "Cache-Control": "no-cache",
                                                             "X-Accel-Buffering": "no"})
        response.call_on_close(give_back)
        return response
    finished = waited(job, give_back)
    made = tool_calls.read(finished.result or "", tools)
    return {**final(finished, overrides), **with_call(content("" if made else finished.result or ""), made)}, 200, \
        headers


def waited(job: Job, give_back: Callable[[], None]) -> Job:
    """The job once it has ended, the reader slot given back then; one that did not end done is the error /v1
    gives."""
    try:
        finished = follow.ended(job.id)
    finally:
        give_back()
    if finished is None:
        raise APIError(503, "server_shutting_down", f"the server is restarting; job {job.id} goes on: fetch it with "
                                                    f"GET /api/jobs/{job.id}", headers={"Retry-After": "5"})
    if finished.status != JobStatus.DONE.value:
        raise job_failure(finished)
    return finished


def session_id() -> str:
    """The client's name for the conversation the call lands in: the header, else a new one."""
    chosen = request.headers.get(CONVERSATION_HEADER)
    if chosen is None:
        return f"ollama-{secrets.token_hex(6)}"
    if not submissions.valid_session_id(chosen):
        raise APIError(400, "invalid_request", f"{CONVERSATION_HEADER} must be 1-128 characters: letters, digits "
                                               "and . _ : @ -")
    return chosen


def streamed(job_id: int, model: str, overrides: dict, content: Callable[[str], dict], tools: list[tool_calls.Tool],
             key: str | None) -> Iterator[str]:
    """A line per batch of tokens (app/follow.py), an empty piece on quiet ticks (proxies close silent connections,
    and NDJSON has no comments), then the `done` line; a failure is Ollama's `{"error": ...}` line. With `tools`, an
    answer that starts with `{` is a call: held back, and sent as one line with its call before the `done` line."""
    held: list[str] = []
    started = False

    def line(text: str, made: tool_calls.Call | None = None) -> str:
        return json.dumps({"model": model, "created_at": _now(), **with_call(content(text), made), "done": False}) + "\n"

    for step in follow.until_end(job_id, key=key):
        if step.kind == "token":
            if held or (tools and not started and step.value.startswith("{")):
                held.append(step.value)
                continue
            started = started or bool(step.value)
            yield line(step.value)
        elif step.kind == "quiet":
            yield line("")
        elif step.kind == "reset":
            yield _error(f"the worker restarted job {job_id}; its answer will be in GET /api/jobs/{job_id}")
            return
        elif step.kind == "revoked":
            yield _error("the API key was revoked")
        elif step.job.status != JobStatus.DONE.value:
            yield _error(job_failure(step.job).message)
        else:
            made = tool_calls.read(step.job.result or "", tools)
            if made is not None:
                yield line("", made)
            elif held or step.missed:
                yield line("".join(held) + (step.missed or ""))
            yield json.dumps({**final(step.job, overrides), **content("")}) + "\n"


def with_call(reply: dict, made: tool_calls.Call | None) -> dict:
    """A chat answer's message with the call it makes (Ollama's arguments are an object)."""
    if made is not None:
        reply["message"]["tool_calls"] = [{"function": {"name": made.name, "arguments": made.arguments}}]
    return reply


def final(job: Job, overrides: dict) -> dict:
    """The `done` object's counts and durations (nanoseconds), from the job's row: `load_duration` is the time it
    waited in the queue (workers keep models loaded), `prompt_eval_duration` the time to its first token."""
    first = job.first_token_ms or 0
    return {
        "model": job.model, "created_at": _now(), "done": True, "done_reason": finish_reason(job, overrides),
        "total_duration": _nanoseconds(job.created_at, job.processed_at),
        "load_duration": _nanoseconds(job.created_at, job.started_at),
        "prompt_eval_count": job.prompt_tokens or 0, "prompt_eval_duration": first * MILLION,
        "eval_count": job.completion_tokens or 0,
        "eval_duration": max((job.duration_ms or 0) - first, 0) * MILLION,
    }


def _nanoseconds(start: datetime | None, end: datetime | None) -> int:
    return max(int((end - start).total_seconds() * 1e9), 0) if start and end else 0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _error(message: str) -> str:
    return json.dumps({"error": message}) + "\n"
