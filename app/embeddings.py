"""Embedding jobs, below the faces that ask for them (/v1/embeddings, Ollama's /api/embed and /api/embeddings): the
rules a request must pass, how its inputs and vectors are kept in the job's row, and a vector's encodings.

An embedding job is a job like any other (queued, limited per key, owned, on /jobs), told apart by its `kind`
(app/models.py: JobKind). Its row holds:
- `user_input`: the inputs, a JSON list of strings (one string is a list of one);
- `result`: the vectors, a JSON list of lists of numbers, one per input in order, each a unit vector written with the
  fewest digits that read back as the same float32 (what llama.cpp computed, half the text of a double's digits);
- `prompt_tokens`: the tokens of all inputs, as read (after truncation).
Its assistant message says only how many vectors of what size were made: the conversation page is for reading.

An input longer than the model's context is refused with a 400 (`context_length_exceeded`), unless the request
asked for truncation (Ollama's default): then the worker reads its first `n_ctx` tokens. The web process counts
tokens with the model's vocabulary (as it does for chat inputs), so the worker never meets an input it must refuse.
"""

import base64
import json
import struct

from app.extensions import current
from app.llm import ModelLoadError
from app.models import Job
from app.submissions import MAX_INPUT_CHARS, Refused, valid_text

MAX_INPUTS = 2048  # OpenAI's limit on the inputs of one request


def check(model: str | None, inputs: list[str], truncate: bool) -> str:
    """The model's key, if it may embed each of `inputs` (else `Refused`, naming the field at fault)."""
    settings = current().settings
    if model not in settings.offered_models:
        raise Refused("model_not_found", f"Unknown model '{model}'; available: {', '.join(settings.offered_models)}.",
                      status=404, param="model")
    if not settings.models[model].embeddings:
        raise Refused("model_not_embedding", f"the model '{model}' is not set to make embeddings (its "
                                             "'embeddings' setting is false)", param="model")
    if not inputs:
        raise Refused("invalid_request", "input: at least one text is required", param="input")
    if len(inputs) > MAX_INPUTS:
        raise Refused("invalid_request", f"input: at most {MAX_INPUTS} texts per request", param="input")
    if sum(map(len, inputs)) > MAX_INPUT_CHARS:
        raise Refused("invalid_request", f"input: at most {MAX_INPUT_CHARS} characters in all", param="input")
    for index, text in enumerate(inputs):
        if not text or not valid_text(text):
            raise Refused("invalid_request", f"input.{index}: must be non-empty, valid Unicode text", param="input")
    if not truncate:
        limit = settings.models[model].n_ctx
        for index, count in enumerate(token_counts(model, inputs)):
            if count > limit:
                raise Refused("context_length_exceeded", f"input.{index} is {count} tokens; the model '{model}' "
                                                         f"reads at most {limit}", param="input")
    return model


def token_counts(model: str, inputs: list[str]) -> list[int]:
    """How many tokens the model reads of each input, counted with its vocabulary (the web process's copy)."""
    try:
        llm = current().tokenizers.get(model).llm
    except ModelLoadError as exc:
        raise Refused("model_unavailable", str(exc), status=503) from None
    return [len(llm.tokenize(text.encode(), add_bos=True, special=False)) for text in inputs]


def dimensions(model: str) -> int | None:
    """The length of the offered model's vectors (its hidden size), from its GGUF's metadata; None if it is not
    offered or its file cannot be read."""
    if model not in current().settings.offered_models:
        return None
    try:
        metadata = current().tokenizers.get(model).llm.metadata
    except ModelLoadError:
        return None
    size = metadata.get(f"{metadata.get('general.architecture', '')}.embedding_length")
    return int(size) if size and size.isdigit() else None


def stored_inputs(inputs: list[str]) -> str:
    return json.dumps(inputs, ensure_ascii=False)


def inputs_of(job: Job) -> list[str]:
    return json.loads(job.user_input)


def stored_vectors(vectors: list[list[float]]) -> str:
    return json.dumps([[_float32(x) for x in vector] for vector in vectors], separators=(",", ":"))


def vectors_of(job: Job) -> list[list[float]]:
    return json.loads(job.result or "[]")


def summary(vectors: list[list[float]]) -> str:
    """The job's assistant message: what was made, not the numbers (they are its result)."""
    size = len(vectors[0]) if vectors else 0
    return f"{len(vectors)} embedding{'s' if len(vectors) != 1 else ''} of {size} dimensions"


def base64_of(vector: list[float]) -> str:
    """OpenAI's `encoding_format: "base64"`: the vector's little-endian float32 bytes, in base64."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _float32(x: float) -> float:
    """The shortest decimal that reads back as the same float32 as `x` (repr does this for doubles only)."""
    single = struct.unpack("<f", struct.pack("<f", x))[0]
    for digits in range(6, 10):
        shorter = float(f"{single:.{digits}g}")
        if struct.unpack("<f", struct.pack("<f", shorter))[0] == single:
            return shorter
    return single
