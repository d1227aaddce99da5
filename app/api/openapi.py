"""The JSON API's part of the OpenAPI document (app/openapi.py)."""

from app.api.schemas import PromptTemplateRequest, SubmitRequest
from app.conversation_files import ConversationFile
from app.submissions import SESSION_ID
from app.models import JobKind, JobStatus, Priority
from app.openapi import Part, answer, errors, json_content, ref

NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_STRING = {"type": ["string", "null"]}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}}}
JOB = {
    "type": "object",
    "required": ["id", "kind", "conversation_id", "user_input", "model", "system_prompt", "prompt_template", "variables",
                 "params", "status", "result", "error", "priority", "attempts", "request_id", "queue_position",
                 "eta_seconds", "created_at", "started_at", "processed_at", "usage", "callback"],
    "properties": {
        "id": {"type": "integer"}, "conversation_id": {"type": "string"}, "user_input": {"type": "string"},
        "kind": {"enum": [kind.value for kind in JobKind], "description": (
            "chat: user_input is the prompt, result the answer; embedding: user_input is the inputs and result the "
            "vectors, each as JSON text (docs/openai.md, Embeddings)")},
        "model": {"type": "string"}, "system_prompt": NULLABLE_STRING, "params": {"type": "object"},
        "prompt_template": {**NULLABLE_STRING, "description": "name@version the system prompt was filled from"},
        "variables": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
        "status": {"enum": [status.value for status in JobStatus]},
        "result": {**NULLABLE_STRING, "description": "the text so far while processing"},
        "error": {"oneOf": [{"type": "null"}, {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}}}]},
        "priority": {"enum": [priority.value for priority in Priority]}, "attempts": {"type": "integer"},
        "request_id": {**NULLABLE_STRING, "description": "the X-Request-ID of the request that made it"},
        "queue_position": NULLABLE_INT, "eta_seconds": {"type": ["number", "null"]},
        "created_at": {"type": "string"}, "started_at": NULLABLE_STRING, "processed_at": NULLABLE_STRING,
        "usage": {"type": "object", "properties": {name: NULLABLE_INT for name in (
            "prompt_tokens", "completion_tokens", "first_token_ms", "duration_ms")}},
        "callback": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {
            "url": {"type": "string"}, "status": {"enum": ["pending", "delivered", "failed"]},
            "attempts": {"type": "integer"}, "last_status": NULLABLE_INT, "last_error": NULLABLE_STRING}}]},
    },
}
PROMPT_TEMPLATE = {
    "type": "object", "required": ["name", "version", "reference", "text", "variables", "created_at"],
    "properties": {"name": {"type": "string"}, "version": {"type": "integer"},
                   "reference": {"type": "string", "description": "name@version"}, "text": {"type": "string"},
                   "variables": {"type": "array", "items": {"type": "string"}}, "created_at": {"type": "string"},
                   "versions": {"type": "array", "items": {"type": "object", "properties": {
                       "version": {"type": "integer"}, "created_at": {"type": "string"}}}}},
}
JOB_ID = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}]


def part(prefix: str) -> Part:
    api = Part()
    api.schemas["Job"] = JOB
    api.schemas["SubmittedJob"] = {"allOf": [ref("Job"), {"type": "object", "required": ["job_id"],
                                                           "properties": {"job_id": {"type": "integer"}}}]}
    submit = api.model(SubmitRequest)
    api.operation(f"{prefix}/submit", "post", "Submit a prompt as a job", {
        "202": answer("the job, queued", ref("SubmittedJob"), {"Location": {"schema": {"type": "string"}}}),
        "200": answer("the job an earlier request with the same Idempotency-Key made", ref("SubmittedJob")),
        **errors("Error", 400, 401, 403, 404, 409, 413, 429, 503)},  # 404: model_not_found
        requestBody={"required": True, "content": json_content(submit)},
        parameters=[{"name": "Idempotency-Key", "in": "header", "required": False,
                     "schema": {"type": "string", "pattern": "^[!-~]{1,200}$"}}])
    api.operation(f"{prefix}/jobs/{{job_id}}", "get", "A job, with its text so far while it runs", {
        "200": answer("the job", ref("Job")), **errors("Error", 401, 404, 429)}, parameters=JOB_ID)
    api.operation(f"{prefix}/jobs", "get", "Jobs, newest first", {
        "200": answer("the jobs", {"type": "object", "required": ["jobs"],
                                   "properties": {"jobs": {"type": "array", "items": ref("Job")}}}),
        **errors("Error", 400, 401, 429)}, parameters=[
        {"name": "conversation_id", "in": "query", "schema": {"type": "string"}},
        {"name": "status", "in": "query", "schema": {"enum": [status.value for status in JobStatus]}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}])
    api.operation(f"{prefix}/jobs/{{job_id}}/cancel", "post", "Cancel a queued or running job", {
        "200": answer("the job", ref("Job")), **errors("Error", 401, 404, 409, 429, 503)}, parameters=JOB_ID)
    api.operation(f"{prefix}/jobs/{{job_id}}/events", "get", "A job's tokens as Server-Sent Events", {
        "200": {"description": "token, reset, then done, error or cancelled events",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **errors("Error", 400, 401, 404, 429)}, parameters=[*JOB_ID, {
            "name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}}])
    api.operation(f"{prefix}/status/{{conversation_id}}", "get", "A conversation's last answer", {
        "200": answer("the last answer", {"type": "object", "required": ["conversation_id", "response"], "properties": {
            "conversation_id": {"type": "string"}, "response": NULLABLE_STRING}}),
        **errors("Error", 401, 404, 429)}, parameters=[
        {"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string"}}])
    api.operation(f"{prefix}/usage", "get", "Ended jobs and tokens per key and day", {
        "200": answer("the usage", {"type": "object", "required": ["days", "usage"], "properties": {
            "days": {"type": "integer"}, "usage": {"type": "array", "items": {"type": "object", "properties": {
                "key": {"type": "string"}, "day": {"type": "string"}, "jobs": {"type": "integer"},
                "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}}}}}}),
        **errors("Error", 400, 401, 429)}, parameters=[
        {"name": "days", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 366}}])
    api.operation(f"{prefix}/models", "get", "The offered models, their settings, queue depth and workers", {
        "200": answer("the models", {"type": "object", "required": ["default", "models"], "properties": {
            "default": {"type": "string"}, "models": {"type": "array", "items": {"type": "object"}}}}),
        **errors("Error", 401, 429)})
    prompt_templates(api, prefix)
    conversation_files(api, prefix)
    api.operation(f"{prefix}/openapi.json", "get", "This document", {"200": answer("the OpenAPI document",
                                                                               {"type": "object"})}, security=[])
    return api


def prompt_templates(api: Part, prefix: str) -> None:
    api.schemas["PromptTemplate"] = PROMPT_TEMPLATE
    api.operation(f"{prefix}/prompt-templates", "get", "Your prompt templates, each at its latest version", {
        "200": answer("the templates", {"type": "object", "required": ["prompt_templates"], "properties": {
            "prompt_templates": {"type": "array", "items": ref("PromptTemplate")}}}),
        **errors("Error", 401, 429)})
    api.operation(f"{prefix}/prompt-templates", "post", "Save a template: version 1, or the next version", {
        "201": answer("the new version", ref("PromptTemplate"), {"Location": {"schema": {"type": "string"}}}),
        "200": answer("the text is the latest version's: nothing new", ref("PromptTemplate")),
        **errors("Error", 400, 401, 409, 413, 429)},
        requestBody={"required": True, "content": json_content(api.model(PromptTemplateRequest))})
    api.operation(f"{prefix}/prompt-templates/{{reference}}", "get", "One version, and the list of all versions", {
        "200": answer("the version", ref("PromptTemplate")), **errors("Error", 400, 401, 404, 429)}, parameters=[
        {"name": "reference", "in": "path", "required": True, "description": "name (the latest version) or "
         "name@version", "schema": {"type": "string"}}])


def conversation_files(api: Part, prefix: str) -> None:
    document = api.model(ConversationFile)
    api.operation(f"{prefix}/conversations/{{conversation_id}}/export", "get",
                  "A conversation as a file: its JSON form (importable) or a Markdown transcript", {
        "200": {"description": "the conversation's ended turns, as an attachment",
                "content": {**json_content(document), "text/markdown": {"schema": {"type": "string"}}},
                "headers": {"Content-Disposition": {"schema": {"type": "string"}}}},
        **errors("Error", 400, 401, 404, 429)}, parameters=[
        {"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "format", "in": "query", "schema": {"enum": ["json", "md"], "default": "json"}}])
    api.operation(f"{prefix}/conversations/import", "post", "Import a conversation from its JSON form", {
        "201": answer("the conversation, stored", {"type": "object", "required": ["conversation_id", "title", "turns"],
                                                    "properties": {"conversation_id": {"type": "string"},
                                                                   "title": {"type": "string"},
                                                                   "turns": {"type": "integer"}}},
                      {"Location": {"schema": {"type": "string"}}}),
        **errors("Error", 400, 401, 409, 413, 429)},
        requestBody={"required": True, "content": json_content(document)}, parameters=[
        {"name": "conversation_id", "in": "query", "description": "import under this id instead of the file's",
         "schema": {"type": "string", "pattern": f"^{SESSION_ID.pattern}$"}}])
