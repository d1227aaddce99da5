"""OpenAI's legacy text completion wire format (`/v1/completions`), below the face that speaks it: the request as
far as Llamalith serves it, and the completion and chunks a job becomes (`cmpl-<job id>`). Llamalith serves chat
models, so the prompt is the user's message, through the model's chat template, as on every other face. What it
does not serve (echo, log probabilities, best_of, suffix, several prompts or choices) is refused by name."""

from typing import Any

from pydantic import Field, field_validator

from app.errors import APIError
from app.intake import Submission
from app.models import Job, JobStatus
from app.openai_format import Sampling, finish_reason, job_failure, usage, validated
from app.submissions import MAX_INPUT_CHARS, valid_text

# OpenAI's fields with the value that asks for nothing: any other value is refused, naming the field.
UNSUPPORTED = {"echo": (None, False), "logprobs": (None,), "best_of": (None, 1), "suffix": (None, ""),
               "n": (None, 1), "logit_bias": (None, {})}


class TextCompletionRequest(Sampling):
    prompt: str | list[str] = Field(description="the prompt; a list of one string is taken as that string")
    max_tokens: int = Field(16, ge=1, le=32768, description="16 when not given, as in OpenAI's API")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt is supported")
        return value

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def generation_overrides(self) -> dict[str, Any]:
        overrides = {"max_tokens": self.max_tokens, **self.sampling()}
        return {name: value for name, value in overrides.items() if value is not None}


def parse_text_completion_request(data: Any) -> TextCompletionRequest:
    if not isinstance(data, dict):
        raise APIError(400, "invalid_json", "the request body must be a JSON object")
    for name in sorted(UNSUPPORTED.keys() & data.keys()):
        if not any(data[name] == allowed and type(data[name]) is type(allowed) for allowed in UNSUPPORTED[name]):
            raise APIError(400, "unsupported_parameter", f"'{name}' is not supported by this server", param=name)
    if isinstance(data.get("prompt"), list) and len(data["prompt"]) > 1:
        raise APIError(400, "unsupported_parameter", "prompt: only one prompt per request is supported",
                       param="prompt")
    request = validated(TextCompletionRequest, data)
    if len(request.text()) > MAX_INPUT_CHARS or not valid_text(request.text()):
        raise APIError(400, "invalid_request", "prompt: too long, or not valid Unicode text", param="prompt")
    return request


def submission(request: TextCompletionRequest, session_id: str, **extra) -> Submission:
    """The prompt as the one submit path takes it (app/intake.py): the user's message, no earlier turns, the
    model's default system prompt."""
    return Submission(user_input=request.text(), session_id=session_id, model=request.model,
                      params=request.generation_overrides(), history=[], **extra)


def text_completion(job: Job, model: str, overrides: dict) -> dict:
    if job.status != JobStatus.DONE.value:
        raise job_failure(job)
    return {"id": f"cmpl-{job.id}", "object": "text_completion", "created": int(job.created_at.timestamp()),
            "model": model, "system_fingerprint": None,
            "choices": [choice(job.result or "", finish_reason(job, overrides))], "usage": usage(job)}


def choice(text: str, finish: str | None) -> dict:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}


def chunk_object(job_id: int, created: int, model: str, choices: list[dict], **extra) -> dict:
    """One chunk of a streamed text completion; the usage chunk's `choices` are empty."""
    return {"id": f"cmpl-{job_id}", "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": None, "choices": choices, **extra}
