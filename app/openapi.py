"""The OpenAPI 3.1 document of the JSON APIs, served at GET /api/openapi.json. Each face describes its own paths
(app/api/openapi.py, app/v1/openapi.py); request bodies come from the same pydantic models that validate them, and
tests/test_openapi.py checks that every route is documented and that live answers match (Schemathesis)."""

from typing import Any

from pydantic import BaseModel

SECURITY = [{"bearer": []}, {"apiKey": []}]


class Part:
    """What one face adds: its paths and the schemas they refer to."""

    def __init__(self) -> None:
        self.paths: dict[str, dict] = {}
        self.schemas: dict[str, dict] = {}

    def model(self, model: type[BaseModel]) -> dict:
        """A $ref to the pydantic model's JSON schema (and the schemas it uses), added to this part."""
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        self.schemas.update(schema.pop("$defs", {}))
        self.schemas[model.__name__] = schema
        return ref(model.__name__)

    def operation(self, path: str, method: str, summary: str, responses: dict, **extra: Any) -> None:
        self.paths.setdefault(path, {})[method] = {"summary": summary, "responses": responses, **extra}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def answer(description: str, schema: dict | None = None, headers: dict | None = None) -> dict:
    found: dict[str, Any] = {"description": description}
    if schema is not None:
        found["content"] = json_content(schema)
    if headers:
        found["headers"] = headers
    return found


def errors(schema: str, *statuses: int) -> dict:
    """The error answers an operation may give, all in the face's error format."""
    return {str(status): answer(DESCRIPTIONS[status], ref(schema)) for status in statuses}


DESCRIPTIONS = {400: "the request is malformed or refused", 401: "no valid API key", 403: "not allowed for this key",
                404: "no such object (or another user's)", 409: "conflicts with the object's state",
                413: "the body is too large", 429: "over a limit; see Retry-After",
                503: "temporarily unavailable", 504: "the job ran out of time"}

COMPONENTS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "OpenAIError": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type", "code", "param"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "code": {"type": ["string", "null"]}, "param": {"type": ["string", "null"]}}}}},
}


def document(base_path: str, *parts: Part) -> dict:
    paths: dict[str, dict] = {}
    schemas = dict(COMPONENTS)
    for part in parts:
        paths.update(part.paths)
        schemas.update(part.schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Llamalith", "version": "1",
                 "description": "A self-hosted chat and job queue for local LLMs: the JSON API (/api) and the "
                                "OpenAI-compatible API (/v1). Every operation needs an API key."},
        "servers": [{"url": base_path or "/"}],
        "security": SECURITY,
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    }
