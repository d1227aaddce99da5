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

from app import jobs, streams, submissions
from app.errors import APIError
from app.extensions import current, db
from app.keys import presented_key, take_reader_slot, valid_key
from app.models import Job, JobStatus, Priority
from app.openai_format import (ChatCompletionRequest, chunk_object, completion, finish_reason, job_failure,
                                 parse_chat_request, split_messages, usage)
from app.v1 import bp

TICK_SECONDS = 5  # a keep-alive comment on quiet streams, and a look at the job and the key
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
        chunks = stream_with_context(completion_chunks(job.id, model, body))
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
    try:
        data = submissions.json_body()
        body = parse_chat_request(data)
        idempotency = submissions.idempotency(data)
        if idempotency and (earlier := submissions.replayed(g.api_key, idempotency)):
            return body, earlier, True
        if body.model not in current().settings.offered_models:
            raise APIError(404, "model_not_found", f"the model '{body.model}' does not exist", param="model")
        system_prompt, history, user_input = split_messages(body.messages)
        overrides = body.generation_overrides()
        model, system_prompt = submissions.check(body.model, system_prompt, user_input, overrides)
        priority = Priority.INTERACTIVE.value if g.api_key.interactive else Priority.BATCH.value
        return body, jobs.submit(g.api_key.user_id, conversation_name(body), user_input, model, system_prompt,
                                 overrides, priority=priority, api_key_id=g.api_key.id, history=history,
                                 idempotency=idempotency), False
    except jobs.AlreadySubmitted:
        return body, submissions.replayed(g.api_key, idempotency), True
    except submissions.Refused as refused:
        raise APIError(refused.status, refused.code, refused.message) from None


def conversation_name(body: ChatCompletionRequest) -> str:
    name = request.headers.get(CONVERSATION_HEADER) or body.user
    if name is None:
        return f"openai-{secrets.token_hex(6)}"
    if not submissions.valid_conversation_id(name):
        raise APIError(400, "invalid_request", f"{CONVERSATION_HEADER} (or user) must be 1-128 characters: letters, "
                                               "digits and . _ : @ -", param="user")
    return name


def wait_for_end(job_id: int) -> Job:
    db.session.remove()  # no session is held while waiting
    for entry in streams.follow(current().redis, job_id, "0-0", current().shutting_down, TICK_SECONDS):
        if entry.kind == "end" or (entry.kind == "tick" and _job(job_id).finished):
            return _job(job_id)
    raise APIError(503, "server_shutting_down", f"the server is restarting; job {job_id} goes on: fetch it with "
                                                f"GET /api/jobs/{job_id}", headers={"Retry-After": "5"})


def _job(job_id: int) -> Job:
    db.session.remove()  # a fresh read: the worker wrote it
    return db.session.get(Job, job_id)


def completion_chunks(job_id: int, model: str, body: ChatCompletionRequest) -> Iterator[str]:
    """OpenAI's stream: a role chunk, a chunk per batch of tokens (app/streams.py), a finish chunk, a usage chunk
    if asked, then [DONE]."""
    created = int(time.time())
    overrides = body.generation_overrides()

    def chunk(delta: dict | None, finish: str | None = None, **extra) -> str:
        return f"data: {json.dumps(chunk_object(job_id, created, model, delta, finish, **extra))}\n\n"

    db.session.remove()
    yield chunk({"role": "assistant", "content": ""})
    sent_any = False
    for entry in streams.follow(current().redis, job_id, "0-0", current().shutting_down, TICK_SECONDS):
        if entry.kind == "token":
            sent_any = True
            yield chunk({"content": entry.value})
            continue
        if entry.kind == "reset":
            yield _error(f"the worker restarted job {job_id}; its answer will be in GET /api/jobs/{job_id}")
            return
        if entry.kind == "tick" and valid_key(presented_key()) is None:
            yield _error("the API key was revoked")
            return
        job = _job(job_id)
        if entry.kind == "tick" and not job.finished:
            yield ": keep-alive\n\n"
            continue
        if job.status != JobStatus.DONE.value:
            failure = job_failure(job)
            yield _error(failure.message, failure.code)
            return
        if not sent_any and job.result:  # the live stream was lost: the database has the text
            yield chunk({"content": job.result})
        yield chunk({}, finish_reason(job, overrides))
        if body.stream_options and body.stream_options.include_usage:
            yield chunk(None, usage=usage(job))
        yield "data: [DONE]\n\n"
        return


def _error(message: str, code: str = "stream_interrupted") -> str:
    return f"data: {json.dumps({'error': {'message': message, 'type': 'server_error', 'code': code, 'param': None}})}\n\n"
