"""OpenAI's chat completion wire format, below the faces that speak it (/v1) and the batches that write it: the
request as far as Llamalith serves it, its messages as a prompt, and the completion, chunk, usage and failure a job
becomes, and the JSON schema a `response_format` asks for (structured outputs). What it does not serve (the legacy
`functions`, several choices, log probabilities, images) is refused by name, never silently ignored."""

import json
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, create_model, field_validator

from app.errors import APIError
from app.extensions import current
from app import tool_calls
from app.intake import Submission
from app.llm import grammar
from app.models import Job, JobStatus
from app.submissions import MAX_INPUT_CHARS, valid_text

Body = TypeVar("Body", bound=BaseModel)
# How a job that did not end `done` is answered: its error code -> HTTP status.
JOB_ERROR_STATUS = {"context_length_exceeded": 400, "timeout": 504}
# Fields OpenAI defines that Llamalith does not serve: a request that uses them gets a 400 naming the field.
UNSUPPORTED = {"functions", "function_call", "logprobs", "top_logprobs", "logit_bias", "audio", "modalities",
               "prediction", "web_search_options"}


class Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=MAX_INPUT_CHARS)  # JSON text, as OpenAI sends it


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Part] | None = None
    tool_calls: list[ToolCall] | None = Field(None, max_length=128)  # an assistant's earlier calls
    tool_call_id: str | None = Field(None, max_length=200)  # a tool message: the call it answers

    def text(self) -> str:
        if isinstance(self.content, list):
            if any(part.type != "text" for part in self.content):
                raise ValueError("only text content parts are supported")
            return "".join(part.text or "" for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class Function(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = Field("", max_length=10_000)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    strict: bool | None = None  # arguments always follow the parameters here: the grammar enforces them


class ToolSpec(BaseModel):
    type: Literal["function"]
    function: Function


class ChosenFunction(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class NamedChoice(BaseModel):
    type: Literal["function"]
    function: ChosenFunction


def tool_fields(spec: type[BaseModel], named: type[BaseModel]) -> type[BaseModel]:
    """A request's three tool fields, over a dialect's shapes of a tool (`spec`) and of a `tool_choice` naming one.
    The choice is a mode's name or such an object; an object is checked as a named choice only, so a wrong one is
    told what it lacks, not that it is no mode. `parallel_tool_calls` is taken: an answer makes at most one call
    either way."""
    choice = Annotated[Union[Annotated[Literal["none", "auto", "required"], Tag("<mode>")],
                             Annotated[named, Tag("<named>")]],
                       Discriminator(lambda value: "<named>" if isinstance(value, dict | BaseModel) else "<mode>")]
    return create_model(f"{spec.__name__}Fields", tools=(list[spec] | None, Field(None, max_length=128)),
                        tool_choice=(choice | None, None), parallel_tool_calls=(bool | None, None))


class Sampling(BaseModel):
    """What chat and text completions share: the model, sampling within OpenAI's bounds, streaming, the caller."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=200)

    def sampling(self) -> dict[str, Any]:
        """The sampling fields as generation settings (None: not sent)."""
        return {"temperature": self.temperature, "top_p": self.top_p, "frequency_penalty": self.frequency_penalty,
                "presence_penalty": self.presence_penalty, "seed": self.seed,
                "stop": [self.stop] if isinstance(self.stop, str) else self.stop}


class ChatCompletionRequest(Sampling, tool_fields(ToolSpec, NamedChoice)):
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    max_tokens: int | None = Field(None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)
    n: int | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("response_format")
    @classmethod
    def _enforceable(cls, value: dict | None) -> dict | None:
        schema = answer_schema(value)
        if schema is not None:
            grammar.check(schema)
        return value

    def offered_tools(self) -> list[tool_calls.Tool]:
        return [tool_calls.Tool(spec.function.name, spec.function.description, spec.function.parameters)
                for spec in self.tools or []]

    def callable_tools(self) -> list[tool_calls.Tool]:
        """The functions an answer may call: none with the choice `none`."""
        return [] if self.chosen_tool() == tool_calls.NONE else self.offered_tools()

    def chosen_tool(self) -> str:
        """`auto`, `required`, `none`, or the name of the one function the answer must call."""
        if isinstance(self.tool_choice, NamedChoice):
            return self.tool_choice.function.name
        return self.tool_choice or tool_calls.AUTO

    def generation_overrides(self) -> dict[str, Any]:
        overrides = {"max_tokens": self.max_completion_tokens or self.max_tokens, **self.sampling(),
                     "json_schema": answer_schema(self.response_format),
                     **tool_calls.params(self.offered_tools(), self.chosen_tool())}
        return {name: value for name, value in overrides.items() if value is not None}


def answer_schema(response_format: dict | None) -> dict | None:
    """The JSON schema a `response_format` asks the answer to follow (app/llm/grammar.py); None for free text.
    `json_object` is any object; `json_schema` carries the schema in `json_schema.schema`."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        wrapper = response_format.get("json_schema")
        if not isinstance(wrapper, dict) or not isinstance(wrapper.get("schema", {}), dict):
            raise ValueError("json_schema: must be an object whose 'schema' is a JSON schema")
        return wrapper.get("schema") or {"type": "object"}
    raise ValueError(f"type {kind!r} is not one of 'text', 'json_object', 'json_schema'")


def validated(kind: type[Body], data: Any) -> Body:
    """`data` as the request `kind`, or OpenAI's 400 naming the field at fault (every /v1 request body)."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"] if not str(part).startswith("<")) or None  # no tags
        raise APIError(400, "invalid_request", f"{field}: {error['msg'].removeprefix('Value error, ')}",
                       param=field) from None


def parse_chat_request(data: Any) -> ChatCompletionRequest:
    if not isinstance(data, dict):
        raise APIError(400, "invalid_json", "the request body must be a JSON object")
    for name in sorted(UNSUPPORTED & data.keys()):
        if data[name] not in (None, False, [], {}):
            raise APIError(400, "unsupported_parameter", f"'{name}' is not supported by this server", param=name)
    request = validated(ChatCompletionRequest, data)
    for index, message in enumerate(request.messages):
        try:
            text = message.text()
        except ValueError as exc:
            raise APIError(400, "unsupported_parameter", f"messages.{index}.content: {exc}", param="messages") from None
        if len(text) > MAX_INPUT_CHARS or not valid_text(text):
            raise APIError(400, "invalid_request", f"messages.{index}.content: too long, or not valid Unicode text",
                           param="messages")
    _check_tools(request)
    return request


def _check_tools(request: ChatCompletionRequest) -> None:
    json_format = "response_format" if answer_schema(request.response_format) is not None else None
    try:
        tool_calls.check(request.offered_tools(), request.chosen_tool(), json_format)
    except tool_calls.Unusable as refused:
        raise APIError(400, refused.code, str(refused), param=refused.param) from None


def split_messages(messages: list[ChatMessage]) -> tuple[str | None, list[list[str | None]], str]:
    """OpenAI messages -> (system prompt, earlier [user, assistant] turns, the new input). An assistant's calls are
    its turn, written as the model writes them; a tool's result is a user turn (app/tool_calls.py)."""
    system = [message.text() for message in messages if message.role in ("system", "developer")]
    talk = _talk(messages)
    if not talk or talk[-1][0] != "user":
        raise APIError(400, "invalid_request", "messages: the last message must be from the user or a tool",
                       param="messages")
    turns: list[list[str | None]] = []
    for role, text in talk[:-1]:
        if role == "user" or not turns or turns[-1][1] is not None:
            turns.append([None, None])
        turns[-1][0 if role == "user" else 1] = text
    return "\n\n".join(system) if system else None, turns, talk[-1][1]


def _talk(messages: list[ChatMessage]) -> list[tuple[str, str]]:
    """The conversation's messages as (user or assistant, text)."""
    named: dict[str, str] = {}  # a call's id -> its function, for the result that answers it
    talk = []
    for message in messages:
        if message.role == "assistant" and message.tool_calls:
            named.update((call.id, call.function.name) for call in message.tool_calls)
            calls = [tool_calls.written(tool_calls.Call(call.function.name, _arguments(call.function.arguments)))
                     for call in message.tool_calls]
            talk.append(("assistant", "\n".join([message.text(), *calls]).strip()))
        elif message.role == "tool":
            name = named.get(message.tool_call_id or "") or getattr(message, "name", None)
            talk.append(("user", tool_calls.result(name, message.text())))
        elif message.role in ("user", "assistant"):
            talk.append((message.role, message.text()))
    return talk


def _arguments(text: str) -> dict:
    try:
        arguments = json.loads(text)
    except ValueError:
        return {}
    return arguments if isinstance(arguments, dict) else {}


def submission(chat: ChatCompletionRequest, owner: int, session_id: str, **extra) -> Submission:
    """The request as the one submit path takes it (app/intake.py); `extra` are the Submission's other fields."""
    system_prompt, history, user_input = split_messages(chat.messages)
    if offered := tool_calls.instructions(chat.offered_tools(), chat.chosen_tool()):
        system_prompt = "\n\n".join(part for part in (system_prompt, offered) if part)
    return Submission(owner=owner, user_input=user_input, session_id=session_id, model=chat.model,
                      system_prompt=system_prompt, params=chat.generation_overrides(), history=history, **extra)


def completion(job: Job, model: str, overrides: dict, tools: list[tool_calls.Tool] | None = None) -> dict:
    """The `chat.completion` a done job is; an answer that calls one of `tools` is that call."""
    if job.status != JobStatus.DONE.value:
        raise job_failure(job)
    call = tool_calls.read(job.result or "", tools or [])
    if call is None:
        message = {"role": "assistant", "content": job.result or "", "refusal": None}
    else:
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call_object(job.id, call)]}
    return {
        "id": f"chatcmpl-{job.id}", "object": "chat.completion", "created": _created(job), "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if call else finish_reason(job, overrides)}],
        "usage": usage(job),
    }


def call_object(job_id: int, call: tool_calls.Call) -> dict:
    """A call in OpenAI's shape: its id is the job's (one call per answer), its arguments JSON text."""
    return {"id": f"call_{job_id}", "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}


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
