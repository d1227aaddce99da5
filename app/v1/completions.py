"""POST /v1/completions: OpenAI's legacy text completion over Llamalith's queue (the wire format is
app/text_completion_format.py). The prompt is the user's message of a one-turn chat: Llamalith serves chat models."""

import time

from app.models import Job
from app.openai_format import finish_reason, usage
from app.text_completion_format import (chunk_object, choice, parse_text_completion_request, submission,
                                        text_completion)
from app.v1 import bp, calls


@bp.post("/completions")
def completions():
    call = calls.submit(parse_text_completion_request, calls.filed_by_user(submission))
    body, job = call.body, call.job
    model, overrides = job.model, body.generation_overrides()
    if not body.stream:
        return calls.answer(call, lambda finished: text_completion(finished, model, overrides))
    created = int(time.time())

    def ending(finished: Job) -> list[dict]:
        last = [chunk_object(job.id, created, model, [choice("", finish_reason(finished, overrides))])]
        if body.stream_options and body.stream_options.include_usage:
            last.append(chunk_object(job.id, created, model, [], usage=usage(finished)))
        return last

    pieces = calls.chunks(job.id, lambda text: chunk_object(job.id, created, model, [choice(text, None)]), ending)
    return calls.answer(call, None, pieces)
