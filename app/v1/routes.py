"""GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions: OpenAI's wire format over Llamalith's queue.

A chat completion is a job like any other: it is on /jobs and in GET /api/jobs, its id is in the
`X-Llamalith-Job-Id` header, and it runs to the end even if the client goes away. The messages the client sends
are the prompt (the system messages, the earlier turns, the last user message), so the conversation it lands in
only groups calls for people to read: `X-Llamalith-Conversation: <id>` (or `user`) names it.
"""

import json
import secrets
import time
from collections.abc import Iterator

from flask import Response, g, request, stream_with_context

from app import follow, intake, request_body, submissions
from app.errors import APIError
from app.extensions import current
from app.keys import presented_key, take_reader_slot
from app.models import Job, JobStatus, Priority
from app.openai_format import (ChatCompletionRequest, chunk_object, completion, finish_reason, job_failure,
                                 parse_chat_request, submission, usage)
from app.v1 import bp

CONVERSATION_HEADER = "X-Llamalith-Conversation"


def model_object(key: str) -> dict:
    return {"id": key, "object": "model", "created": 0, "owned_by": "llamalith"}


@bp.get("/models")
def list_models():
    return {"object": "list", "data": [model_object(key) for key in current().settings.offered_models]}


@bp.get("/models/<model_id>")
def get_model(model_id: str):
    if model_id not in current().settings.offered_models:
        raise APIError(404, "model_not_found", f"the model '{model_id}' does not exist", param="model")
    return model_object(model_id)


@bp.post("/chat/completions")
def chat_completions():
    give_back = take_reader_slot("retry shortly")
    try:
        body, job, replayed = submit()
    except BaseException:
        give_back()
        raise
    model, overrides = job.model, body.generation_overrides()
    headers = {"X-Llamalith-Job-Id": str(job.id)}
    if replayed:  # as on POST /api/submit: the answer comes from the job an earlier request made
        headers["Idempotent-Replayed"] = "true"
    if body.stream:
        chunks = stream_with_context(completion_chunks(job.id, model, body, presented_key()))
        response = Response(chunks, mimetype="text/event-stream",
                            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.call_on_close(give_back)
        return response
    try:
        finished = wait_for_end(job.id)
    finally:
        give_back()
    return completion(finished, model, overrides), 200, headers


def submit() -> tuple[ChatCompletionRequest, Job, bool]:
    """The request and its job: a new one, or (and True) the one an earlier request with the same Idempotency-Key
    made."""
    data = request_body.json_body()
    body = parse_chat_request(data)
    priority = Priority.INTERACTIVE.value if g.api_key.interactive else Priority.BATCH.value
    job, replayed = intake.submit(submission(
        body, g.api_key.user_id, session_id_of(body), priority=priority, api_key=g.api_key,
        idempotency=intake.idempotency(request.headers.get("Idempotency-Key"), data)))
    return body, job, replayed


def session_id_of(body: ChatCompletionRequest) -> str:
    """The client's name for the conversation the call lands in: the header, else `user`, else a new one."""
    session_id = request.headers.get(CONVERSATION_HEADER) or body.user
    if session_id is None:
        return f"openai-{secrets.token_hex(6)}"
    if not submissions.valid_session_id(session_id):
        raise APIError(400, "invalid_request", f"{CONVERSATION_HEADER} (or user) must be 1-128 characters: letters, "
                                               "digits and . _ : @ -", param="user")
    return session_id


def wait_for_end(job_id: int) -> Job:
    for step in follow.until_end(job_id):
        if step.kind == "end":
            return step.job
    raise APIError(503, "server_shutting_down", f"the server is restarting; job {job_id} goes on: fetch it with "
                                                f"GET /api/jobs/{job_id}", headers={"Retry-After": "5"})


def completion_chunks(job_id: int, model: str, body: ChatCompletionRequest, key: str | None) -> Iterator[str]:
    """OpenAI's stream: a role chunk, a chunk per batch of tokens (app/follow.py), a finish chunk, a usage chunk
    if asked, then [DONE]."""
    created = int(time.time())

    def chunk(delta: dict | None, finish: str | None = None, **extra) -> str:
        return f"data: {json.dumps(chunk_object(job_id, created, model, delta, finish, **extra))}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for step in follow.until_end(job_id, key=key):
        if step.kind == "token":
            yield chunk({"content": step.value})
        elif step.kind == "reset":
            yield _error(f"the worker restarted job {job_id}; its answer will be in GET /api/jobs/{job_id}")
            return
        elif step.kind == "revoked":
            yield _error("the API key was revoked")
        elif step.kind == "quiet":
            yield ": keep-alive\n\n"
        elif step.job.status != JobStatus.DONE.value:
            failure = job_failure(step.job)
            yield _error(failure.message, failure.code)
        else:
            if step.missed:
                yield chunk({"content": step.missed})
            yield chunk({}, finish_reason(step.job, body.generation_overrides()))
            if body.stream_options and body.stream_options.include_usage:
                yield chunk(None, usage=usage(step.job))
            yield "data: [DONE]\n\n"


def _error(message: str, code: str = "stream_interrupted") -> str:
    return f"data: {json.dumps({'error': {'message': message, 'type': 'server_error', 'code': code, 'param': None}})}\n\n"
