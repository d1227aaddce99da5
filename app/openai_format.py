"""OpenAI's chat completion wire format, below the faces that speak it (/v1) and the batches that write it: the
request as far as Llamalith serves it, its messages as a prompt, and the completion, chunk, usage and failure a job
becomes. What it does not serve (tools, other response formats, several choices, log probabilities, images) is refused
by name, never silently ignored."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import APIError
from app.extensions import current
from app.intake import Submission
from app.models import Job, JobStatus
from app.submissions import MAX_INPUT_CHARS, valid_text

# How a job that did not end `done` is answered: its error code -> HTTP status.
JOB_ERROR_STATUS = {"context_length_exceeded": 400, "timeout": 504}
# Fields OpenAI defines that Llamalith does not serve: a request that uses them gets a 400 naming the field.
UNSUPPORTED = {"tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "logprobs",
               "top_logprobs", "logit_bias", "audio", "modalities", "prediction", "web_search_options"}


class Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            if any(part.type != "text" for part in self.content):
                raise ValueError("only text content parts are supported")
            return "".join(part.text or "" for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    max_tokens: int | None = Field(None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=200)
    response_format: dict[str, Any] | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict | None) -> dict | None:
        if value is not None and value.get("type") != "text":
            raise ValueError("only {'type': 'text'} is supported")
        return value

    def generation_overrides(self) -> dict[str, Any]:
        overrides = {"max_tokens": self.max_completion_tokens or self.max_tokens, "temperature": self.temperature,
                     "top_p": self.top_p, "frequency_penalty": self.frequency_penalty,
                     "presence_penalty": self.presence_penalty, "seed": self.seed,
                     "stop": [self.stop] if isinstance(self.stop, str) else self.stop}
        return {name: value for name, value in overrides.items() if value is not None}


def parse_chat_request(data: Any) -> ChatCompletionRequest:
    if not isinstance(data, dict):
        raise APIError(400, "invalid_json", "the request body must be a JSON object")
    for name in sorted(UNSUPPORTED & data.keys()):
        if data[name] not in (None, False, [], {}):
            raise APIError(400, "unsupported_parameter", f"'{name}' is not supported by this server", param=name)
    try:
        request = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or None
        raise APIError(400, "invalid_request", f"{field}: {error['msg'].removeprefix('Value error, ')}",
                       param=field) from None
    for index, message in enumerate(request.messages):
        try:
            text = message.text()
        except ValueError as exc:
            raise APIError(400, "unsupported_parameter", f"messages.{index}.content: {exc}", param="messages") from None
        if len(text) > MAX_INPUT_CHARS or not valid_text(text):
            raise APIError(400, "invalid_request", f"messages.{index}.content: too long, or not valid Unicode text",
                           param="messages")
    return request


def split_messages(messages: list[ChatMessage]) -> tuple[str | None, list[list[str | None]], str]:
    """OpenAI messages -> (system prompt, earlier [user, assistant] turns, the new input)."""
    system = [message.text() for message in messages if message.role in ("system", "developer")]
    talk = [message for message in messages if message.role in ("user", "assistant")]
    if not talk or talk[-1].role != "user":
        raise APIError(400, "invalid_request", "messages: the last message must be from the user", param="messages")
    turns: list[list[str | None]] = []
    for message in talk[:-1]:
        if message.role == "user" or not turns or turns[-1][1] is not None:
            turns.append([None, None])
        turns[-1][0 if message.role == "user" else 1] = message.text()
    return "\n\n".join(system) if system else None, turns, talk[-1].text()


def submission(chat: ChatCompletionRequest, owner: int, session_id: str, **extra) -> Submission:
    """The request as the one submit path takes it (app/intake.py); `extra` are the Submission's other fields."""
    system_prompt, history, user_input = split_messages(chat.messages)
    return Submission(owner=owner, user_input=user_input, session_id=session_id, model=chat.model,
                      system_prompt=system_prompt, params=chat.generation_overrides(), history=history, **extra)


def completion(job: Job, model: str, overrides: dict) -> dict:
    if job.status != JobStatus.DONE.value:
        raise job_failure(job)
    return {
        "id": f"chatcmpl-{job.id}", "object": "chat.completion", "created": _created(job), "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": job.result or "", "refusal": None},
                     "logprobs": None, "finish_reason": finish_reason(job, overrides)}],
        "usage": usage(job),
    }


def job_failure(job: Job) -> APIError:
    if job.status == JobStatus.CANCELLED.value:
        return APIError(409, "job_cancelled", f"job {job.id} was cancelled; its text so far is in GET /api/jobs/{job.id}")
    return APIError(JOB_ERROR_STATUS.get(job.error_code, 503), job.error_code or "generation_failed",
                    job.error or "generation failed")


def finish_reason(job: Job, overrides: dict) -> str:
    limit = current().settings.params_for(job.model, overrides).max_tokens
    return "length" if (job.completion_tokens or 0) >= limit else "stop"


def usage(job: Job) -> dict:
    prompt, completion_tokens = job.prompt_tokens or 0, job.completion_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def _created(job: Job) -> int:
    return int(job.created_at.timestamp())


def chunk_object(job_id: int, created: int, model: str, delta: dict | None, finish: str | None = None, **extra) -> dict:
    """One `chat.completion.chunk` of a streamed answer; without a delta, the usage chunk's empty `choices`."""
    return {"id": f"chatcmpl-{job_id}", "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                  "finish_reason": finish}], **extra}
