"""POST /v1/embeddings: OpenAI's embeddings over Llamalith's queue.

Each request is one job (kind `embedding`: app/embeddings.py) through the one submit path, so it is on /jobs and in
GET /api/jobs, counted against its key's limits, its id in the `X-Llamalith-Job-Id` header; the request waits for
it as a whole chat completion does. Its conversation only groups calls for people to read, as a chat completion's
does. An input longer than the model's context is refused (OpenAI's contract), never cut.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app import embeddings
from app.errors import APIError
from app.intake import Submission
from app.models import Job, JobKind, JobStatus
from app.openai_format import job_failure, validated
from app.v1 import bp, calls


class EmbeddingRequest(BaseModel):
    """OpenAI's request, as far as Llamalith serves it; token arrays as `input` are refused by name."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = Field(description="a text, or a list of up to 2048 texts, each non-empty")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="only the model's own length (its hidden size)")
    user: str | None = Field(None, max_length=200)


@bp.post("/embeddings")
def create_embeddings():
    call = calls.submit(parse, submission)
    encode = embeddings.base64_of if call.body.encoding_format == "base64" else (lambda vector: vector)
    return calls.answer(call, lambda finished: listed(finished, encode))


def submission(body: EmbeddingRequest, **common) -> Submission:
    """The request as the one submit path takes it: its texts, one job of kind `embedding`."""
    size = embeddings.dimensions(body.model)  # None for a model not offered: the submit says so
    if body.dimensions is not None and size is not None and body.dimensions != size:
        raise APIError(400, "unsupported_parameter", f"dimensions: the model '{body.model}' makes vectors of "
                                                     f"{size} dimensions only", param="dimensions")
    inputs = [body.input] if isinstance(body.input, str) else body.input
    return Submission(user_input=embeddings.stored_inputs(inputs), session_id=calls.session_id_of(body.user),
                      model=body.model, kind=JobKind.EMBEDDING.value, **common)


def listed(finished: Job, encode) -> dict:
    """OpenAI's list of embeddings a done job made; a job that failed is the same error as on every face."""
    if finished.status != JobStatus.DONE.value:
        raise job_failure(finished)
    tokens = finished.prompt_tokens or 0
    return {"object": "list", "model": finished.model,
            "data": [{"object": "embedding", "index": index, "embedding": encode(vector)}
                     for index, vector in enumerate(embeddings.vectors_of(finished))],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def parse(data) -> EmbeddingRequest:
    """The request, or a 400 naming the field at fault."""
    if not isinstance(data, dict):
        raise APIError(400, "invalid_json", "the request body must be a JSON object")
    given = data.get("input")
    if isinstance(given, list) and any(isinstance(item, (int, float, list)) for item in given):
        raise APIError(400, "unsupported_parameter", "input: token arrays are not supported by this server; send "
                                                     "the texts", param="input")
    return validated(EmbeddingRequest, data)
