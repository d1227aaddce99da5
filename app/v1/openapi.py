"""The OpenAI-compatible API's part of the OpenAPI document (app/openapi.py)."""

from app.openapi import Part, answer, errors, json_content, ref
from app.v1.schemas import ChatCompletionRequest

MODEL = {"type": "object", "required": ["id", "object", "created", "owned_by"], "properties": {
    "id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
    "owned_by": {"type": "string"}}}
COMPLETION = {"type": "object", "required": ["id", "object", "created", "model", "choices", "usage"], "properties": {
    "id": {"type": "string"}, "object": {"const": "chat.completion"}, "created": {"type": "integer"},
    "model": {"type": "string"}, "system_fingerprint": {"type": "null"},
    "choices": {"type": "array", "items": {"type": "object", "properties": {
        "index": {"type": "integer"}, "finish_reason": {"enum": ["stop", "length"]},
        "message": {"type": "object", "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}}}}}},
    "usage": {"type": "object", "properties": {name: {"type": "integer"} for name in (
        "prompt_tokens", "completion_tokens", "total_tokens")}}}}


def part(prefix: str) -> Part:
    v1 = Part()
    v1.schemas.update(Model=MODEL, ChatCompletion=COMPLETION)
    request = v1.model(ChatCompletionRequest)
    v1.operation(f"{prefix}/models", "get", "The offered models (OpenAI format)", {
        "200": answer("the models", {"type": "object", "required": ["object", "data"], "properties": {
            "object": {"const": "list"}, "data": {"type": "array", "items": ref("Model")}}}),
        **errors("OpenAIError", 401, 429)})
    v1.operation(f"{prefix}/models/{{model_id}}", "get", "One model (OpenAI format)", {
        "200": answer("the model", ref("Model")), **errors("OpenAIError", 401, 404, 429)},
        parameters=[{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}])
    v1.operation(f"{prefix}/chat/completions", "post", "A chat completion through the queue (OpenAI format)", {
        "200": {"description": "the completion, or with stream: OpenAI's chunks ending in [DONE]",
                "headers": {"X-Llamalith-Job-Id": {"schema": {"type": "string"}}},
                "content": {**json_content(ref("ChatCompletion")), "text/event-stream": {"schema": {"type": "string"}}}},
        **errors("OpenAIError", 400, 401, 404, 409, 413, 429, 503, 504)},
        requestBody={"required": True, "content": json_content(request)})
    return v1
