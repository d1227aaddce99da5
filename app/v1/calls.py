"""What every /v1 call that makes a job shares (chat completions, responses, text completions): the key's reader
slot held while the call waits, the one submit path with the key's priority and Idempotency-Key, the conversation
the call is filed in, the job's headers, the answer whole or streamed, and OpenAI's chunk stream ending in [DONE].

A call is a job like any other: it is on /jobs and in GET /api/jobs, its id is in the `X-Llamalith-Job-Id` header,
and it runs to the end even if the client goes away."""

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

from flask import Response, g, request, stream_with_context

from app import follow, intake, request_body, submissions
from app.errors import APIError
from app.intake import Submission
from app.keys import presented_key, take_reader_slot
from app.models import Job, JobStatus, Priority
from app.openai_format import job_failure

CONVERSATION_HEADER = "X-Llamalith-Conversation"
Body = TypeVar("Body")


class Call(NamedTuple):
    body: Any  # the parsed request
    job: Job
    replayed: bool  # the job an earlier request with the same Idempotency-Key made
    give_back: Callable[[], None]  # the reader slot: given back when the answer has been sent


def submit(parse: Callable[[Any], Body], submission: Callable[..., Submission]) -> Call:
    """Reads the body with `parse`, turns it into a Submission with `submission(body, owner=, priority=, api_key=,
    idempotency=)` and submits it, holding a reader slot from before the submit (a job is never made for a call
    that could not wait for it)."""
    give_back = take_reader_slot("retry shortly")
    try:
        data = request_body.json_body()
        body = parse(data)
        priority = Priority.INTERACTIVE.value if g.api_key.interactive else Priority.BATCH.value
        job, replayed = intake.submit(submission(
            body, owner=g.api_key.user_id, priority=priority, api_key=g.api_key,
            idempotency=intake.idempotency(request.headers.get("Idempotency-Key"), data)))
    except BaseException:
        give_back()
        raise
    return Call(body, job, replayed, give_back)


def filed_by_user(submission: Callable[..., Submission]) -> Callable[..., Submission]:
    """`submission` taking the conversation the call names (`session_id_of(body.user)`) as its `session_id`."""
    return lambda body, **common: submission(body, session_id=session_id_of(body.user), **common)


def session_id_of(user: str | None) -> str:
    """The client's name for the conversation the call lands in: the header, else `user`, else a new one."""
    session_id = request.headers.get(CONVERSATION_HEADER) or user
    if session_id is None:
        return f"openai-{secrets.token_hex(6)}"
    if not submissions.valid_session_id(session_id):
        raise APIError(400, "invalid_request", f"{CONVERSATION_HEADER} (or user) must be 1-128 characters: letters, "
                                               "digits and . _ : @ -", param="user")
    return session_id


def answer(call: Call, whole: Callable[[Job], dict] | None, events: Iterator[str] | None = None):
    """The call's answer: with `events`, that stream as Server-Sent Events; else, once the job has ended,
    `whole(job)`."""
    headers = {"X-Llamalith-Job-Id": str(call.job.id)}
    if call.replayed:  # as on POST /api/submit: the answer comes from the job an earlier request made
        headers["Idempotent-Replayed"] = "true"
    if events is not None:
        response = Response(stream_with_context(events), mimetype="text/event-stream",
                            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.call_on_close(call.give_back)
        return response
    try:
        finished = wait_for_end(call.job.id)
    finally:
        call.give_back()
    return whole(finished), 200, headers


def wait_for_end(job_id: int) -> Job:
    for step in follow.until_end(job_id):
        if step.kind == "end":
            return step.job
    raise APIError(503, "server_shutting_down", f"the server is restarting; job {job_id} goes on: fetch it with "
                                                f"GET /api/jobs/{job_id}", headers={"Retry-After": "5"})


def chunks(job_id: int, piece: Callable[[str], dict | None], ending: Callable[[Job], list[dict]]) -> Iterator[str]:
    """OpenAI's chunk stream (chat and text completions): `piece(text)` per batch of tokens (app/follow.py; None:
    nothing to send yet), then the chunks `ending(job)` gives for the job that ended well, then [DONE]; a failure is
    an error object."""
    for step in follow.until_end(job_id, key=presented_key()):
        if step.kind == "token":
            if (chunk := piece(step.value)) is not None:
                yield data(chunk)
        elif step.kind == "reset":
            yield stream_error(f"the worker restarted job {job_id}; its answer will be in GET /api/jobs/{job_id}")
            return
        elif step.kind == "revoked":
            yield stream_error("the API key was revoked")
        elif step.kind == "quiet":
            yield ": keep-alive\n\n"
        elif step.job.status != JobStatus.DONE.value:
            failure = job_failure(step.job)
            yield stream_error(failure.message, failure.code)
        else:
            if step.missed and (chunk := piece(step.missed)) is not None:
                yield data(chunk)
            yield from (data(chunk) for chunk in ending(step.job))
            yield "data: [DONE]\n\n"


def data(value: dict) -> str:
    return f"data: {json.dumps(value)}\n\n"


def stream_error(message: str, code: str = "stream_interrupted") -> str:
    return data({"error": {"message": message, "type": "server_error", "code": code, "param": None}})
