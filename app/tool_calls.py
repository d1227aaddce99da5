"""Tool calls, below the faces that offer them (OpenAI's `tools`, Ollama's): the functions a request offers, written
into its system prompt; the grammar the answer is sampled under, so that a call is always one of the functions with
arguments valid against its parameters; earlier calls and their results as the prompt's turns; and an answer read
back as a call.

A call is written as one JSON object, `{"name": ..., "arguments": {...}}`. With the choice `auto` the answer is
either such an object or plain text that does not start with `{` (app/llm/grammar.py), so the model chooses with
its first token; `required` and a named function allow only a call; `none` offers nothing."""

import json
from dataclasses import dataclass, field
from typing import Any

from app.llm import grammar

AUTO, REQUIRED, NONE = "auto", "required", "none"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any]


class Unusable(ValueError):
    """Tools a request cannot offer as it asks; `param` names the request's field at fault, `code` is the API's."""

    def __init__(self, param: str, message: str, code: str = "invalid_request"):
        super().__init__(f"{param}: {message}")
        self.param, self.code = param, code


def check(tools: list[Tool], choice: str, json_format: str | None = None) -> None:
    """Raises Unusable for a choice among no tools or naming none of them, a function whose parameters no grammar
    can enforce, or tools beside the JSON format the field `json_format` asks for (one grammar per answer)."""
    if not tools and choice not in (AUTO, NONE):
        raise Unusable("tool_choice", "there are no tools to choose from")
    if choice not in (AUTO, REQUIRED, NONE) and choice not in {tool.name for tool in tools}:
        raise Unusable("tool_choice", f"names '{choice}', which is not among the tools")
    for tool in tools:
        try:
            grammar.check(tool.parameters)
        except grammar.UnsupportedSchema as exc:
            raise Unusable("tools", f"function '{tool.name}' parameters: {exc}") from None
    if json_format and tools and choice != NONE:
        raise Unusable(json_format, "a JSON format and tools cannot be used together", "unsupported_parameter")


def params(tools: list[Tool], choice: str) -> dict[str, Any]:
    """The generation settings that make the answer a call (or, with `auto`, a call or text)."""
    offered = _offered(tools, choice)
    if not offered:
        return {}
    calls = [_call_schema(tool) for tool in offered]
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    return {"json_schema": schema, "json_optional": choice == AUTO}


def offered_in(params: dict[str, Any] | None) -> list[Tool]:
    """The functions a job's answer could call, read back from the grammar its settings recorded: how a stored
    answer is told from text once the request that offered them is gone."""
    schema = (params or {}).get("json_schema")
    tools = [_tool_of(call) for call in schema.get("anyOf", [schema])] if isinstance(schema, dict) else []
    return tools if tools and None not in tools else []


def _call_schema(tool: Tool) -> dict[str, Any]:
    """A call of `tool` as a JSON schema; its description rides along (a grammar ignores it), so that a stored
    answer lists its functions as they were offered."""
    schema = {"type": "object", "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
              "required": ["name", "arguments"]}
    return {**schema, "description": tool.description} if tool.description else schema


def _tool_of(schema: Any) -> Tool | None:
    try:
        tool = Tool(schema["properties"]["name"]["const"], schema.get("description", ""),
                    schema["properties"]["arguments"])
    except (KeyError, TypeError, AttributeError):
        return None
    return tool if _call_schema(tool) == schema else None


def instructions(tools: list[Tool], choice: str) -> str:
    """What the system prompt tells the model about the functions it may call (nothing for `none`)."""
    offered = _offered(tools, choice)
    if not offered:
        return ""
    listed = "\n".join(json.dumps({"name": tool.name, "description": tool.description,
                                   "parameters": tool.parameters}) for tool in offered)
    how = 'To call a function, answer with only a JSON object: {"name": <function name>, "arguments": {...}}.'
    when = " Otherwise, answer the user as usual." if choice == AUTO else " Call one now."
    return f"You can call these functions:\n{listed}\n{how}{when}"


def written(call: Call) -> str:
    """A call as the model writes it: how an earlier call appears in the prompt's history."""
    return json.dumps({"name": call.name, "arguments": call.arguments})


def result(name: str | None, content: str) -> str:
    """A function's result, as the prompt's next user turn."""
    return f"The function {name} returned: {content}" if name else f"A function returned: {content}"


def read(text: str, tools: list[Tool]) -> Call | None:
    """The call an answer makes, or None for a text answer (or a cut-off call: the job ran out of max_tokens)."""
    if not tools or not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("name") not in {tool.name for tool in tools}:
        return None
    arguments = data.get("arguments")
    return Call(data["name"], arguments if isinstance(arguments, dict) else {})


def _offered(tools: list[Tool], choice: str) -> list[Tool]:
    if choice == NONE:
        return []
    return [tool for tool in tools if choice in (AUTO, REQUIRED) or tool.name == choice]
