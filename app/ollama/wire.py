"""Ollama's request bodies for /api/chat and /api/generate, as far as Llamalith serves them: each becomes a
`Submission` for the one submit path. Its `options` map onto `GenerationParams`; what a warm shared worker cannot
honour is refused by name, and the load-time options that are the operator's settings here are accepted and ignored
(docs/ollama.md says which and why)."""

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app import tool_calls
from app.errors import APIError, validation_message
from app.intake import Submission
from app.llm import GenerationParams
from app.openai_format import ChatMessage, ToolSpec, split_messages
from app.submissions import MAX_INPUT_CHARS, MAX_SYSTEM_PROMPT_CHARS, valid_text

# Ollama's option -> GenerationParams' field.
OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "repeat_penalty": "repeat_penalty",
           "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty", "seed": "seed",
           "num_predict": "max_tokens", "stop": "stop", "mirostat": "mirostat_mode", "mirostat_tau": "mirostat_tau",
           "mirostat_eta": "mirostat_eta"}
# How Ollama loads a model (its context, threads, GPU layers, memory mapping): here the operator's settings for the
# worker that holds it warm for everyone, so no request can change them. n8n's Ollama nodes and other clients send
# some of them with every call, so they are accepted and ignored rather than refused.
LOAD_OPTIONS = {"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "use_mmap", "use_mlock", "numa",
                "low_vram", "f16_kv", "vocab_only", "logits_all", "embedding_only"}
# Top-level fields Llamalith does not serve (yet): a request that sets one is refused, naming it and why.
REFUSED = {
    "images": "the offered models read text only",
    "raw": "prompts always go through the model's chat template",
    "context": "send the earlier turns as /api/chat messages instead",
    "suffix": "fill-in-the-middle is not served",
    "template": "the chat template is the model's (its GGUF's, or its chat_format setting)",
    "think": "the offered models do not think aloud",
}
COMMON = {"model", "options", "stream", "keep_alive"}
CHAT_FIELDS = COMMON | {"messages", "tools", "format", "think"}
GENERATE_FIELDS = COMMON | {"prompt", "system", "suffix", "images", "format", "template", "raw", "context", "think"}


class CalledFunction(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] = Field(default_factory=dict)  # Ollama sends an object, not JSON text


class Called(BaseModel):
    function: CalledFunction


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[Any] | None = None
    tool_calls: list[Called] | None = Field(None, max_length=128)  # an assistant's earlier calls
    tool_name: str | None = Field(None, max_length=64)  # a tool's result: the function it comes from

    def as_openai(self) -> ChatMessage:
        """The message as OpenAI's, which app/openai_format.py splits into the prompt's parts."""
        calls = [{"id": f"call_{index}", "function": {"name": call.function.name,
                                                      "arguments": json.dumps(call.function.arguments)}}
                 for index, call in enumerate(self.tool_calls or [])]
        return ChatMessage(role=self.role, content=self.content, tool_calls=calls or None, name=self.tool_name)


class Request(BaseModel):
    """What /api/chat and /api/generate share; `keep_alive` is taken and ignored (workers keep models warm)."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, max_length=200)
    options: dict[str, Any] | None = None
    stream: bool = True
    keep_alive: str | float | None = None
    format: Literal["json", ""] | dict[str, Any] | None = None


class ChatRequest(Request):
    messages: list[Message] = Field(default_factory=list, max_length=10_000)
    tools: list[ToolSpec] | None = Field(None, max_length=128)

    def offered_tools(self) -> list[tool_calls.Tool]:
        """The functions the answer may call (Ollama has no tool_choice: the model chooses, `auto`)."""
        return [tool_calls.Tool(spec.function.name, spec.function.description, spec.function.parameters)
                for spec in self.tools or []]


class GenerateRequest(Request):
    prompt: str = ""
    system: str | None = None


def parse(data: Any, kind: type[Request], fields: set[str]) -> Request:
    """The request, or a 400 naming the field at fault: an unknown one, one Llamalith does not serve, a bad value."""
    if not isinstance(data, dict):
        raise APIError(400, "invalid_json", "the request body must be a JSON object")
    for name in sorted(data.keys() - fields):
        raise APIError(400, "unknown_parameter", f"'{name}' is not a field of this endpoint", param=name)
    for name in sorted(REFUSED.keys() & data.keys()):
        if data[name] not in (None, False, "", [], {}):
            raise unsupported(name, REFUSED[name])
    try:
        request = kind.model_validate(data)
    except ValidationError as exc:
        raise APIError(400, "invalid_request", validation_message(exc)) from None
    for index, message in enumerate(getattr(request, "messages", [])):
        if message.images:
            raise unsupported(f"messages.{index}.images", REFUSED["images"])
        _check_text(f"messages.{index}.content", message.content, MAX_INPUT_CHARS)
    if isinstance(request, ChatRequest) and request.tools:
        _check_tools(request)
    if isinstance(request, GenerateRequest):
        _check_text("prompt", request.prompt, MAX_INPUT_CHARS)
        _check_text("system", request.system or "", MAX_SYSTEM_PROMPT_CHARS)
    return request


def unsupported(name: str, why: str) -> APIError:
    return APIError(400, "unsupported_parameter", f"'{name}' is not supported by this server: {why}", param=name)


def model_key(name: str) -> str:
    """Ollama's clients may add the default tag to a name they were given without one."""
    return name.removesuffix(":latest")


def params(options: dict[str, Any] | None, answer_format: str | dict | None = None) -> dict[str, Any]:
    """Ollama's `options` and `format` as the generation settings a job records: only those the client sent, checked
    against GenerationParams' bounds. A negative `num_predict` (Ollama: no limit) or `seed` (Ollama: random) is left
    to the model's setting. `format` "json" is any object, else a JSON schema (docs/structured-outputs.md)."""
    overrides: dict[str, Any] = {}
    if answer_format:
        overrides["json_schema"] = {"type": "object"} if answer_format == "json" else answer_format
    for name, value in (options or {}).items():
        if name in LOAD_OPTIONS:
            continue
        if name not in OPTIONS:
            raise unsupported(f"options.{name}", "the sampler has no such setting here")
        if name in ("num_predict", "seed") and isinstance(value, int) and not isinstance(value, bool) and value < 0:
            continue
        overrides[OPTIONS[name]] = value
    try:
        GenerationParams(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        ours = str(error["loc"][0]) if error["loc"] else ""
        theirs = "format" if ours == "json_schema" else "options." + next(
            (option for option, field in OPTIONS.items() if field == ours), ours)
        message = error["msg"].removeprefix("Value error, ")
        raise APIError(400, "invalid_request", f"{theirs}: {message}", param=theirs) from None
    return overrides


def submission(request: Request, **extra) -> Submission:
    """The request as the one submit path takes it (app/intake.py); `extra` are the Submission's other fields. Chat
    messages split as OpenAI's do (app/openai_format.py): system prompt, earlier turns, the new input."""
    overrides = params(request.options, request.format)
    if isinstance(request, ChatRequest):
        system_prompt, history, user_input = split_messages([message.as_openai() for message in request.messages])
        tools = request.offered_tools()
        if tools:
            system_prompt = "\n\n".join(part for part in (system_prompt, tool_calls.instructions(
                tools, tool_calls.AUTO)) if part)
            overrides |= tool_calls.params(tools, tool_calls.AUTO)
    else:
        system_prompt, history, user_input = request.system, [], request.prompt
    return Submission(user_input=user_input, model=model_key(request.model), system_prompt=system_prompt,
                      params=overrides, history=history, **extra)


def _check_tools(request: ChatRequest) -> None:
    try:
        tool_calls.check(request.offered_tools(), tool_calls.AUTO, "format" if request.format else None)
    except tool_calls.Unusable as refused:
        raise APIError(400, refused.code, str(refused), param=refused.param) from None


def _check_text(name: str, text: str, limit: int) -> None:
    if len(text) > limit or not valid_text(text):
        raise APIError(400, "invalid_request", f"{name}: too long, or not valid Unicode text", param=name)
