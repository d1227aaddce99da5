"""GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions: OpenAI's wire format over Llamalith's queue.

A chat completion is a job like any other (app/v1/calls.py). The messages the client sends are the prompt (the
system messages, the earlier turns, the last user message), so the conversation it lands in only groups calls for
people to read: `X-Llamalith-Conversation: <id>` (or `user`) names it.
"""

import itertools
import time

from app.errors import APIError
from app.extensions import current
from app.models import Job
from app import tool_calls
from app.openai_format import (call_object, chunk_object, completion, finish_reason, parse_chat_request, submission,
                               usage)
from app.v1 import bp, calls


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
    call = calls.submit(parse_chat_request, calls.filed_by_user(submission))
    body, job = call.body, call.job
    model, overrides = job.model, body.generation_overrides()
    tools = body.callable_tools()
    if not body.stream:
        return calls.answer(call, lambda finished: completion(finished, model, overrides, tools))
    created = int(time.time())
    held: list[str] = []  # with tools offered, an answer that starts with "{" is a call: sent whole at the end
    started = False

    def piece(text: str) -> dict | None:
        nonlocal started
        if held or (tools and not started and text.startswith("{")):
            held.append(text)
            return None
        started = started or bool(text)
        return chunk_object(job.id, created, model, {"content": text})

    def ending(finished: Job) -> list[dict]:
        made = tool_calls.read(finished.result or "", tools)
        last = []
        if made is not None:
            last.append(chunk_object(job.id, created, model, {"tool_calls": [{"index": 0,
                                                                              **call_object(job.id, made)}]}))
        elif held:
            last.append(chunk_object(job.id, created, model, {"content": "".join(held)}))
        last.append(chunk_object(job.id, created, model, {},
                                 "tool_calls" if made else finish_reason(finished, overrides)))
        if body.stream_options and body.stream_options.include_usage:
            last.append(chunk_object(job.id, created, model, None, usage=usage(finished)))
        return last

    # OpenAI's stream: a role chunk, a chunk per batch of tokens, a finish chunk, a usage chunk if asked, [DONE].
    first = calls.data(chunk_object(job.id, created, model, {"role": "assistant", "content": ""}))
    return calls.answer(call, None, itertools.chain([first], calls.chunks(job.id, piece, ending)))
