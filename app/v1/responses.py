"""POST /v1/responses and GET /v1/responses/{id}: OpenAI's Responses API over Llamalith's queue (the wire format
is app/responses_format.py). A response is a job (app/v1/calls.py); `previous_response_id` continues the
conversation of that response's job: its turns and its answer come before the new input, in the same conversation.
"""

import itertools

from flask import g
from pydantic import BaseModel

from app import follow, tool_calls
from app.errors import APIError
from app.extensions import db
from app.jobs.running import history
from app.keys import presented_key
from app.models import Job, JobStatus
from app.openai_format import job_failure
from app.responses_format import ResponseRequest, parse_response_request, response_id, response_object, submission
from app.responses_stream import Events
from app.v1 import bp, calls


@bp.post("/responses")
def create_response():
    call = calls.submit(parse_response_request, submit_as)
    body, job = call.body, call.job
    echo = {"metadata": body.metadata, "previous_response_id": body.previous_response_id, "user": body.user,
            "tools": [tool.model_dump(exclude_none=True) for tool in body.tools or []],
            "tool_choice": (body.tool_choice.model_dump() if isinstance(body.tool_choice, BaseModel)
                            else body.tool_choice)}
    if not body.stream:
        return calls.answer(call, lambda finished: whole(finished, body.callable_tools(), echo))
    return calls.answer(call, None, events(job, body.callable_tools(), echo))


@bp.get("/responses/<response>")
def get_response(response: str):
    """The stored response; the functions it could call are the ones its grammar recorded."""
    job = owned(response, "response")
    tools = tool_calls.offered_in(job.params)
    return response_object(job, callable_tools=tools, tools=[
        {"type": "function", "name": tool.name, **({"description": tool.description} if tool.description else {}),
         "parameters": tool.parameters, "strict": True} for tool in tools])


def submit_as(body: ResponseRequest, **common):
    """The Submission for `body`: after its previous response, in that response's conversation, if it names one."""
    if body.previous_response_id is None:
        return submission(body, calls.session_id_of(body.user), [], **common)
    previous = owned(body.previous_response_id, "previous_response_id")
    if previous.status != JobStatus.DONE.value:
        raise APIError(400, "invalid_request", f"the response '{body.previous_response_id}' has not completed "
                                               f"(it is {previous.status})", param="previous_response_id")
    earlier = [[turn.user, turn.assistant] for turn in history(previous)] + [[previous.user_input, previous.result]]
    return submission(body, previous.conversation.session_id, earlier, **common)


def owned(response: str, param: str) -> Job:
    """The key's user's job a response id names; another user's is as unknown as one that does not exist."""
    job_id = response_id(response)
    job = db.session.get(Job, job_id) if job_id is not None else None
    if job is None or job.user_id != g.api_key.user_id:
        raise APIError(404, "not_found", f"no response with id '{response}'", param=param)
    return job


def whole(job: Job, tools: list[tool_calls.Tool], echo: dict) -> dict:
    """The ended job as a response; a job that failed or was cancelled is the same error as on every face."""
    if job.status != JobStatus.DONE.value:
        raise job_failure(job)
    return response_object(job, callable_tools=tools, **echo)


def events(job: Job, tools: list[tool_calls.Tool], echo: dict):
    """The Responses stream: created, in progress, the message item and its text part added, a text delta per
    batch of tokens (app/follow.py), then the text, part and item done and the response completed (or incomplete,
    or failed); a stream cut short ends with an `error` event. With `tools`, an answer that starts with `{` is a
    call: held back, and told at the end as a `function_call` item."""
    stream = Events(job, echo, tools)
    held: list[str] = []

    def sent(event: dict) -> str:
        return follow.sse(event["type"], event)

    def followed():
        for step in follow.until_end(job.id, key=presented_key()):
            if step.kind == "token":
                if held or (tools and not stream.text and step.value.startswith("{")):
                    held.append(step.value)
                    continue
                yield from map(sent, stream.delta(step.value))
            elif step.kind == "reset":
                yield sent(stream.error(f"the worker restarted job {job.id}; its answer will be in GET "
                                        f"/v1/responses/resp_{job.id}", "stream_interrupted"))
                return
            elif step.kind == "revoked":
                yield sent(stream.error("the API key was revoked", "stream_interrupted"))
            elif step.kind == "quiet":
                yield ": keep-alive\n\n"
            else:
                text = "".join(held) + (step.missed or "")
                called = tool_calls.read(step.job.result or "", tools)
                if text and step.job.status == JobStatus.DONE.value and called is None:
                    yield from map(sent, stream.delta(text))
                yield from map(sent, stream.ending(step.job))

    return itertools.chain((sent(event) for event in stream.opening()), followed())
