"""OpenAI's Responses API wire format (`/v1/responses`), below the face that speaks it: the request as far as
Llamalith serves it, its input as a prompt, and the response object and stream events a job becomes. A response is
a job: its id is `resp_<job id>`, as a chat completion's is `chatcmpl-<job id>`. What it does not serve (reasoning,
background runs, tools other than functions) is refused by name, never silently ignored; a JSON `text.format` is
structured outputs, as `response_format` is on chat completions; function `tools` are tool calls
(app/tool_calls.py), an answer that calls one a `function_call` output item."""

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app import tool_calls
from app.errors import APIError
from app.extensions import current
from app.intake import Submission
from app.llm import grammar
from app.llm.settings import GenerationParams
from app.models import Job, JobStatus
from app.openai_format import ChatMessage, split_messages, tool_fields, validated
from app.submissions import MAX_INPUT_CHARS, valid_text

RESPONSE_ID = re.compile(r"resp_([0-9]{1,18})")
# Fields OpenAI defines that Llamalith does not serve: a request that uses them gets a 400 naming the field.
UNSUPPORTED = {"reasoning", "include", "background", "background_options", "conversation", "prompt",
               "max_tool_calls", "top_logprobs", "context_management"}
INPUT_ITEMS = ("message", "function_call", "function_call_output")
# What a text part of a message may be; images, files and audio are refused.
TEXT_PARTS = {"input_text", "output_text", "text"}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class InputMessage(BaseModel):
    """An input item: a message (OpenAI's "easy" form, or `type: message` with parts)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["message"] = "message"
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        for part in self.content:
            if part.type not in TEXT_PARTS:
                raise ValueError(f"content parts of type '{part.type}' are not supported (only input_text and "
                                 "output_text)")
        return "".join(part.text or "" for part in self.content)


class FunctionCallItem(BaseModel):
    """An input item: a call an earlier response made."""

    model_config = ConfigDict(extra="allow")
    type: Literal["function_call"]
    call_id: str = Field(max_length=200)
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=MAX_INPUT_CHARS)


class FunctionCallOutput(BaseModel):
    """An input item: what the function a call named returned."""

    model_config = ConfigDict(extra="allow")
    type: Literal["function_call_output"]
    call_id: str = Field(max_length=200)
    output: str = Field(max_length=MAX_INPUT_CHARS)


class FunctionTool(BaseModel):
    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = Field(None, max_length=10_000)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # arguments always follow the parameters here: the grammar enforces them


class NamedFunction(BaseModel):
    type: Literal["function"]
    name: str


class TextFormat(BaseModel):
    """`text.format`: free text, any JSON object, or JSON valid against `schema` (structured outputs: the worker
    samples under a grammar, app/llm/grammar.py)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = Field(None, max_length=64)
    json_schema: dict[str, Any] | None = Field(None, alias="schema")

    @model_validator(mode="after")
    def _enforceable(self) -> "TextFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("a json_schema format needs its 'schema'")
        if (schema := self.answer_schema()) is not None:
            grammar.check(schema)
        return self

    def answer_schema(self) -> dict[str, Any] | None:
        """The schema the answer follows: None for free text, any object for json_object."""
        return {"text": None, "json_object": {"type": "object"}}.get(self.type, self.json_schema)


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: TextFormat | None = None


class ResponseRequest(tool_fields(FunctionTool, NamedFunction)):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    input: str | list[FunctionCallItem | FunctionCallOutput | InputMessage] = Field(
        description="the prompt: a string (one user message), or messages and earlier calls with their outputs")
    instructions: str | None = Field(None, description="the system prompt")
    max_output_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    store: bool = True
    user: str | None = Field(None, max_length=200)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    previous_response_id: str | None = Field(None, max_length=40)
    text: TextConfig | None = None
    truncation: Literal["disabled"] | None = None

    @field_validator("input")
    @classmethod
    def _some_input(cls, value: str | list) -> str | list:
        if isinstance(value, list) and not value:
            raise ValueError("at least one message is needed")
        return value

    @field_validator("metadata")
    @classmethod
    def _short_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value and any(len(key) > 64 or len(text) > 512 for key, text in value.items()):
            raise ValueError("keys are at most 64 characters, values at most 512")
        return value

    def generation_overrides(self) -> dict[str, Any]:
        text_format = self.text.format if self.text else None
        overrides = {"max_tokens": self.max_output_tokens, "temperature": self.temperature, "top_p": self.top_p,
                     "json_schema": text_format.answer_schema() if text_format else None,
                     **tool_calls.params(self.offered_tools(), self.chosen_tool())}
        return {name: value for name, value in overrides.items() if value is not None}

    def items(self) -> list[FunctionCallItem | FunctionCallOutput | InputMessage]:
        return [InputMessage(role="user", content=self.input)] if isinstance(self.input, str) else self.input

    def offered_tools(self) -> list[tool_calls.Tool]:
        return [tool_calls.Tool(tool.name, tool.description or "", tool.parameters or {"type": "object"})
                for tool in self.tools or []]

    def chosen_tool(self) -> str:
        """`auto`, `required`, `none`, or the name of the one function the answer must call."""
        if isinstance(self.tool_choice, NamedFunction):
            return self.tool_choice.name
        return self.tool_choice or tool_calls.AUTO

    def callable_tools(self) -> list[tool_calls.Tool]:
        return [] if self.chosen_tool() == tool_calls.NONE else self.offered_tools()


def parse_response_request(data: Any) -> ResponseRequest:
    if not isinstance(data, dict):
        raise APIError(400, "invalid_json", "the request body must be a JSON object")
    for name in sorted(UNSUPPORTED & data.keys()):
        if data[name] not in (None, False, [], {}):
            raise unsupported(name, f"'{name}' is not supported by this server")
    if data.get("truncation") not in (None, "disabled"):
        raise unsupported("truncation", "only truncation 'disabled' is supported (history that does not fit the "
                                        "context is trimmed oldest-first, whatever it says)")
    for index, tool in enumerate(data["tools"] if isinstance(data.get("tools"), list) else []):
        if isinstance(tool, dict) and tool.get("type") != "function":
            raise unsupported("tools", f"tools.{index}: tools of type '{tool.get('type')}' are not supported (only "
                                       "functions)")
    for index, item in enumerate(data["input"] if isinstance(data.get("input"), list) else []):
        if isinstance(item, dict) and item.get("type", "message") not in INPUT_ITEMS:
            raise unsupported("input", f"input.{index}: items of type '{item['type']}' are not supported (only "
                                       f"{', '.join(INPUT_ITEMS)})")
    request = validated(ResponseRequest, data)
    for text in (request.instructions or "", *(_text(item, index) for index, item in enumerate(request.items()))):
        if len(text) > MAX_INPUT_CHARS or not valid_text(text):
            raise APIError(400, "invalid_request", "input or instructions: too long, or not valid Unicode text",
                           param="input")
    _check_tools(request)
    return request


def _check_tools(request: ResponseRequest) -> None:
    text_format = request.text.format if request.text else None
    json_format = "text" if text_format and text_format.answer_schema() is not None else None
    try:
        tool_calls.check(request.offered_tools(), request.chosen_tool(), json_format)
    except tool_calls.Unusable as refused:
        raise APIError(400, refused.code, str(refused), param=refused.param) from None


def unsupported(name: str, message: str) -> APIError:
    return APIError(400, "unsupported_parameter", message, param=name)


def _text(item: FunctionCallItem | FunctionCallOutput | InputMessage, index: int) -> str:
    if isinstance(item, FunctionCallItem):
        return item.arguments
    if isinstance(item, FunctionCallOutput):
        return item.output
    try:
        return item.text()
    except ValueError as exc:
        raise unsupported("input", f"input.{index}.content: {exc}") from None


def submission(request: ResponseRequest, session_id: str, earlier: list[list[str | None]], **extra) -> Submission:
    """The request as the one submit path takes it (app/intake.py): `instructions`, the system or developer messages
    and the functions offered are the system prompt; `earlier` (a previous response's turns) comes before the
    input's own turns (split as chat messages are, app/openai_format.py), and the last item, a user's message or a
    function's output, is the new input. `extra` are the Submission's other fields."""
    try:
        system, turns, user_input = split_messages([_as_chat(item) for item in request.items()])
    except APIError as refused:
        raise APIError(400, "invalid_request", refused.message.replace("messages", "input"), param="input") from None
    offered = tool_calls.instructions(request.offered_tools(), request.chosen_tool())
    system_prompt = "\n\n".join(part for part in (request.instructions, system, offered) if part) or None
    return Submission(user_input=user_input, session_id=session_id, model=request.model, system_prompt=system_prompt,
                      params=request.generation_overrides(), history=[*map(list, earlier), *turns], **extra)


def _as_chat(item: FunctionCallItem | FunctionCallOutput | InputMessage) -> ChatMessage:
    if isinstance(item, FunctionCallItem):
        return ChatMessage(role="assistant", tool_calls=[{"id": item.call_id, "function": {
            "name": item.name, "arguments": item.arguments}}])
    if isinstance(item, FunctionCallOutput):
        return ChatMessage(role="tool", tool_call_id=item.call_id, content=item.output)
    return ChatMessage(role=item.role, content=item.text())


def response_id(value: str) -> int | None:
    """The job id in a response id (`resp_42`), or None when it is none."""
    found = RESPONSE_ID.fullmatch(value)
    return int(found.group(1)) if found else None


def settings_of(job: Job) -> GenerationParams | None:
    """The settings the job ran with; None for a model no longer offered, or params an older version stored."""
    try:
        return current().settings.params_for(job.model, job.params or {})
    except (KeyError, TypeError, ValidationError):
        return None


def status_of(job: Job, settings: GenerationParams | None) -> str:
    if job.status == JobStatus.DONE.value:
        ran_out = settings is not None and (job.completion_tokens or 0) >= settings.max_tokens
        return "incomplete" if ran_out else "completed"
    return {JobStatus.QUEUED.value: "queued", JobStatus.PROCESSING.value: "in_progress",
            JobStatus.CANCELLED.value: "cancelled"}.get(job.status, "failed")


def message_item(job: Job, text: str | None, status: str) -> dict:
    content = [] if text is None else [output_text(text)]
    return {"id": f"msg_{job.id}", "type": "message", "role": "assistant", "status": status, "content": content}


def output_text(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(job: Job, call: tool_calls.Call) -> dict:
    """A call the answer makes, as a `function_call` output item (its arguments JSON text)."""
    return {"id": f"fc_{job.id}", "type": "function_call", "call_id": f"call_{job.id}", "name": call.name,
            "arguments": json.dumps(call.arguments), "status": "completed"}


def response_object(job: Job, status: str | None = None, callable_tools: list[tool_calls.Tool] = (), **echo) -> dict:
    """The job as a `response`; `status` overrides the job's (a stream's first events say in_progress); an answer
    that calls one of `callable_tools` is a `function_call` item. `echo` are request fields the job does not store
    (`metadata`, `previous_response_id`, `user`, `tools`, `tool_choice`)."""
    settings = settings_of(job)
    call = tool_calls.read(job.result or "", list(callable_tools))
    status = status or status_of(job, settings)
    ended = status in ("completed", "incomplete")
    error = None
    if status in ("failed", "cancelled"):
        error = {"code": job.error_code or ("job_cancelled" if status == "cancelled" else "server_error"),
                 "message": job.error or f"the job was {job.status}"}
    return {
        "id": f"resp_{job.id}", "object": "response", "created_at": int(job.created_at.timestamp()),
        "status": status, "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": job.system_prompt, "max_output_tokens": settings and settings.max_tokens, "model": job.model,
        "output": ([call_item(job, call)] if call else [message_item(
            job, job.result or "", "completed" if status == "completed" else "incomplete")]) if ended else [],
        "parallel_tool_calls": False, "previous_response_id": echo.get("previous_response_id"), "reasoning": None,
        "store": True, "temperature": settings and settings.temperature, "text": {"format": text_format(job)},
        "tool_choice": echo.get("tool_choice") or "auto", "tools": echo.get("tools") or [],
        "top_p": settings and settings.top_p, "truncation": "disabled",
        "usage": usage(job) if ended or status == "failed" else None, "user": echo.get("user"),
        "metadata": echo.get("metadata") or {},
        "completed_at": int(job.processed_at.timestamp()) if ended and job.processed_at else None,
    }


def text_format(job: Job) -> dict:
    """The `text.format` the job ran with, from the schema it recorded."""
    schema = (job.params or {}).get("json_schema")
    if not isinstance(schema, dict) or tool_calls.offered_in(job.params):  # a call's grammar is no text format
        return {"type": "text"}
    if schema == {"type": "object"}:
        return {"type": "json_object"}
    return {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}


def usage(job: Job) -> dict:
    prompt, completion_tokens = job.prompt_tokens or 0, job.completion_tokens or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion_tokens}
