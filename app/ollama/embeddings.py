"""POST /api/embed and the older POST /api/embeddings in Ollama's wire format, over Llamalith's queue.

Each request with input is one job (kind `embedding`: app/embeddings.py), on /jobs and in GET /api/jobs, its id in
the `X-Llamalith-Job-Id` header; the request waits for it as a whole /api/chat does. As in Ollama, an input longer
than the model's context is cut to it unless `truncate` is false (then a 400), and a request without input only asks
for the model to be loaded: here it always is, and no job is made. `options` are checked as /api/chat checks them
and otherwise mean nothing to an embedding; `keep_alive` is taken and ignored (workers keep models warm)."""

from typing import Any

from flask import g, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app import embeddings, intake, request_body
from app.errors import APIError, validation_message
from app.intake import Submission
from app.keys import take_reader_slot
from app.models import Job, JobKind, Priority
from app.ollama import bp, wire
from app.ollama.generation import final, session_id, waited
from app.ollama.models import offered


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] | None = None
    truncate: bool | None = None  # None: true, as in Ollama
    dimensions: int | None = Field(None, ge=1)
    options: dict[str, Any] | None = None
    keep_alive: str | float | None = None


class EmbeddingsRequest(BaseModel):
    """The older route's: one `prompt`, one vector."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200)
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: str | float | None = None


@bp.post("/api/embed")
def embed():
    body = parse(EmbedRequest)
    model = offered(body.model)
    inputs = [body.input] if isinstance(body.input, str) else body.input or []
    size = embeddings.dimensions(model)
    if body.dimensions is not None and size is not None and body.dimensions != size:
        raise wire.unsupported("dimensions", f"the model '{model}' makes vectors of {size} dimensions only")
    if not any(inputs):
        return {"model": model, "embeddings": []}
    job, headers = embedded(model, inputs, body.truncate is not False)
    done = final(job, {})
    return {"model": model, "embeddings": embeddings.vectors_of(job), "total_duration": done["total_duration"],
            "load_duration": done["load_duration"], "prompt_eval_count": job.prompt_tokens or 0}, 200, headers


@bp.post("/api/embeddings")
def embeddings_of_prompt():
    body = parse(EmbeddingsRequest)
    model = offered(body.model)
    if not body.prompt:
        return {"embedding": []}
    job, headers = embedded(model, [body.prompt], truncate=True)
    return {"embedding": embeddings.vectors_of(job)[0]}, 200, headers


def parse(kind: type[BaseModel]) -> BaseModel:
    """The request, or a 400 naming the field at fault (an unknown one, a bad value, an option with no sampler
    setting)."""
    data = request_body.json_body()
    if not isinstance(data, dict):
        raise APIError(400, "invalid_json", "the request body must be a JSON object")
    for name in sorted(data.keys() - kind.model_fields.keys()):
        raise APIError(400, "unknown_parameter", f"'{name}' is not a field of this endpoint", param=name)
    try:
        body = kind.model_validate(data)
    except ValidationError as exc:
        raise APIError(400, "invalid_request", validation_message(exc)) from None
    wire.params(body.options)
    return body


def embedded(model: str, inputs: list[str], truncate: bool) -> tuple[Job, dict[str, str]]:
    """The inputs' job, submitted and waited for to its end; its headers. A job that failed is Ollama's error."""
    give_back = take_reader_slot("retry shortly")
    try:
        job, replayed = intake.submit(Submission(
            owner=g.api_key.user_id, user_input=embeddings.stored_inputs(inputs), session_id=session_id(),
            model=model, kind=JobKind.EMBEDDING.value, truncate=truncate, api_key=g.api_key,
            priority=Priority.INTERACTIVE.value if g.api_key.interactive else Priority.BATCH.value,
            idempotency=intake.idempotency(request.headers.get("Idempotency-Key"), request_body.json_body())))
    except BaseException:
        give_back()
        raise
    finished = waited(job, give_back)
    headers = {"X-Llamalith-Job-Id": str(job.id)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return finished, headers
