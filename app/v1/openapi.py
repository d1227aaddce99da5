"""The OpenAI-compatible API's part of the OpenAPI document (app/openapi.py)."""

from app.batches import FILE_PURPOSES
from app.openai_format import ChatCompletionRequest
from app.v1.embeddings import EmbeddingRequest
from app.openapi import Part, answer, errors, json_content, ref
from app.responses_format import ResponseRequest
from app.text_completion_format import TextCompletionRequest

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
EMBEDDINGS = {"type": "object", "required": ["object", "data", "model", "usage"], "properties": {
    "object": {"const": "list"}, "model": {"type": "string"},
    "data": {"type": "array", "items": {"type": "object", "required": ["object", "index", "embedding"], "properties": {
        "object": {"const": "embedding"}, "index": {"type": "integer"},
        "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}},
                                {"type": "string", "description": "little-endian float32, base64"}]}}}},
    "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"], "properties": {
        name: {"type": "integer"} for name in ("prompt_tokens", "total_tokens")}}}}


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
    responses_and_completions(v1, prefix)
    v1.schemas["Embeddings"] = EMBEDDINGS
    v1.operation(f"{prefix}/embeddings", "post", "Embeddings of texts: one job through the queue (OpenAI format)", {
        "200": {"description": "a unit vector per input (mean-pooled, L2-normalised)",
                "headers": {"X-Llamalith-Job-Id": {"schema": {"type": "string"}}},
                "content": json_content(ref("Embeddings"))},
        **errors("OpenAIError", 400, 401, 404, 409, 413, 429, 503, 504)},
        requestBody={"required": True, "content": json_content(v1.model(EmbeddingRequest))})
    files_and_batches(v1, prefix)
    return v1


NULLABLE_OBJECT = {"type": ["object", "null"]}
RESPONSE = {"type": "object", "required": ["id", "object", "created_at", "status", "model", "output"], "properties": {
    "id": {"type": "string"}, "object": {"const": "response"}, "created_at": {"type": "integer"},
    "status": {"enum": ["completed", "incomplete", "failed", "cancelled", "queued", "in_progress"]},
    "error": NULLABLE_OBJECT, "incomplete_details": NULLABLE_OBJECT, "model": {"type": "string"},
    "instructions": {"type": ["string", "null"]},
    "output": {"type": "array", "items": {"type": "object", "required": ["id", "type", "role", "content"],
                                          "properties": {"type": {"const": "message"}, "role": {"const": "assistant"},
                                                         "content": {"type": "array"}}}},
    "usage": {"type": ["object", "null"], "properties": {name: {"type": "integer"} for name in (
        "input_tokens", "output_tokens", "total_tokens")}}}}
TEXT_COMPLETION = {"type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
                   "properties": {
    "id": {"type": "string"}, "object": {"const": "text_completion"}, "created": {"type": "integer"},
    "model": {"type": "string"},
    "choices": {"type": "array", "items": {"type": "object", "properties": {
        "index": {"type": "integer"}, "text": {"type": "string"}, "finish_reason": {"enum": ["stop", "length"]}}}},
    "usage": COMPLETION["properties"]["usage"]}}
GENERATION_ERRORS = (400, 401, 404, 409, 413, 429, 503, 504)


def responses_and_completions(v1: Part, prefix: str) -> None:
    """OpenAI's Responses API and its legacy text completions (app/v1/responses.py, app/v1/completions.py)."""
    v1.schemas.update(Response=RESPONSE, TextCompletion=TEXT_COMPLETION)
    job_header = {"X-Llamalith-Job-Id": {"schema": {"type": "string"}}}
    v1.operation(f"{prefix}/responses", "post", "A response through the queue (OpenAI's Responses API)", {
        "200": {"description": "the response, or with stream: its events (response.created ... response.completed)",
                "headers": job_header, "content": {**json_content(ref("Response")),
                                                   "text/event-stream": {"schema": {"type": "string"}}}},
        **errors("OpenAIError", *GENERATION_ERRORS)},
        requestBody={"required": True, "content": json_content(v1.model(ResponseRequest))})
    v1.operation(f"{prefix}/responses/{{response}}", "get", "A response (its job), as it is now", {
        "200": answer("the response", ref("Response")), **errors("OpenAIError", 401, 404, 429)},
        parameters=[{"name": "response", "in": "path", "required": True, "schema": {"type": "string"}}])
    v1.operation(f"{prefix}/completions", "post", "A text completion through the queue (OpenAI's legacy format)", {
        "200": {"description": "the completion, or with stream: its chunks ending in [DONE]", "headers": job_header,
                "content": {**json_content(ref("TextCompletion")),
                            "text/event-stream": {"schema": {"type": "string"}}}},
        **errors("OpenAIError", *GENERATION_ERRORS)},
        requestBody={"required": True, "content": json_content(v1.model(TextCompletionRequest))})


NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_STRING = {"type": ["string", "null"]}
FILE = {"type": "object", "required": ["id", "object", "bytes", "created_at", "filename", "purpose"], "properties": {
    "id": {"type": "string"}, "object": {"const": "file"}, "bytes": {"type": "integer"},
    "created_at": {"type": "integer"}, "filename": {"type": "string"},
    "purpose": {"enum": list(FILE_PURPOSES)}, "status": {"type": "string"}}}
LINE_ERROR = {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                             "param": NULLABLE_STRING, "line": NULLABLE_INT}}
BATCH = {"type": "object", "required": ["id", "object", "endpoint", "input_file_id", "completion_window", "status",
                                        "request_counts", "created_at"], "properties": {
    "id": {"type": "string"}, "object": {"const": "batch"}, "endpoint": {"type": "string"},
    "errors": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {
        "object": {"const": "list"}, "data": {"type": "array", "items": LINE_ERROR}}}]},
    "input_file_id": {"type": "string"}, "completion_window": {"type": "string"},
    "status": {"enum": ["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                        "cancelled"]},
    "output_file_id": NULLABLE_STRING, "error_file_id": NULLABLE_STRING,
    **{name: NULLABLE_INT for name in ("created_at", "expires_at", "in_progress_at", "finalizing_at", "completed_at",
                                      "failed_at", "expired_at", "cancelling_at", "cancelled_at")},
    "request_counts": {"type": "object", "required": ["total", "completed", "failed"], "properties": {
        name: {"type": "integer"} for name in ("total", "completed", "failed")}},
    "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}}}}
BATCH_REQUEST = {"type": "object", "required": ["input_file_id", "endpoint", "completion_window"],
                 "additionalProperties": False, "properties": {
                     "input_file_id": {"type": "string"}, "endpoint": {"const": "/v1/chat/completions"},
                     "completion_window": {"const": "24h"},
                     "metadata": {"type": "object", "maxProperties": 16, "additionalProperties": {
                         "type": "string", "maxLength": 512}}}}
FILE_ID = [{"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}]
BATCH_ID = [{"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def files_and_batches(v1: Part, prefix: str) -> None:
    """OpenAI's Files and Batch APIs (app/v1/batches.py)."""
    v1.schemas.update(File=FILE, Batch=BATCH)
    v1.operation(f"{prefix}/files", "post", "Upload a batch input file (JSONL)", {
        "200": answer("the file", ref("File")), **errors("OpenAIError", 400, 401, 413, 429)},
        requestBody={"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file", "purpose"], "properties": {
                "file": {"type": "string", "format": "binary"}, "purpose": {"const": "batch"}}}}}})
    v1.operation(f"{prefix}/files", "get", "Your files", {
        "200": answer("the files", {"type": "object", "required": ["object", "data"], "properties": {
            "object": {"const": "list"}, "data": {"type": "array", "items": ref("File")}}}),
        **errors("OpenAIError", 401, 429)},
        parameters=[{"name": "purpose", "in": "query", "schema": {"type": "string"}}])
    v1.operation(f"{prefix}/files/{{file_id}}", "get", "A file", {
        "200": answer("the file", ref("File")), **errors("OpenAIError", 401, 404, 429)}, parameters=FILE_ID)
    v1.operation(f"{prefix}/files/{{file_id}}", "delete", "Delete a file", {
        "200": answer("deleted", {"type": "object", "required": ["id", "deleted"], "properties": {
            "id": {"type": "string"}, "object": {"const": "file"}, "deleted": {"const": True}}}),
        **errors("OpenAIError", 401, 404, 429)}, parameters=FILE_ID)
    v1.operation(f"{prefix}/files/{{file_id}}/content", "get", "A file's content", {
        "200": {"description": "the file as uploaded or written (JSONL)",
                "content": {"application/jsonl": {"schema": {"type": "string"}}}},
        **errors("OpenAIError", 401, 404, 429)}, parameters=FILE_ID)
    v1.operation(f"{prefix}/batches", "post", "Start a batch: each line of the input file becomes a job", {
        "200": answer("the batch: in_progress, or failed with the input file's errors", ref("Batch")),
        **errors("OpenAIError", 400, 401, 404, 429)},
        requestBody={"required": True, "content": json_content(BATCH_REQUEST)})
    v1.operation(f"{prefix}/batches", "get", "Your batches, newest first", {
        "200": answer("a page of batches", {"type": "object", "required": ["object", "data", "has_more"],
                                            "properties": {"object": {"const": "list"},
                                                           "data": {"type": "array", "items": ref("Batch")},
                                                           "first_id": NULLABLE_STRING, "last_id": NULLABLE_STRING,
                                                           "has_more": {"type": "boolean"}}}),
        **errors("OpenAIError", 400, 401, 404, 429)}, parameters=[
        {"name": "after", "in": "query", "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}])
    v1.operation(f"{prefix}/batches/{{batch_id}}", "get", "A batch and its progress", {
        "200": answer("the batch", ref("Batch")), **errors("OpenAIError", 401, 404, 429)}, parameters=BATCH_ID)
    v1.operation(f"{prefix}/batches/{{batch_id}}/cancel", "post", "Cancel a batch: lines not yet run are dropped", {
        "200": answer("the batch, cancelling or cancelled", ref("Batch")),
        **errors("OpenAIError", 401, 404, 409, 429)}, parameters=BATCH_ID)
