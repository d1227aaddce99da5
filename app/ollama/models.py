"""GET /api/version, GET /api/tags, GET /api/ps and POST /api/show in Ollama's wire format: the offered models
described from their settings and their GGUF files (docs/ollama.md says what is approximate)."""

import hashlib
import json
import math
import re
from datetime import datetime, timezone
from typing import Any

from app import progress, request_body
from app.errors import APIError
from app.extensions import current
from app.llm import ModelLoadError
from app.ollama import bp
from app.ollama.wire import OPTIONS, model_key

# What Ollama clients that check the server's version need to see; docs/ollama.md.
VERSION = "0.6.0"
# Workers keep their models loaded while they run: /api/ps shows it as Ollama shows keep_alive -1, far ahead.
NEVER = "2318-01-01T00:00:00Z"
# A quantization named in the file name (SmolLM2-135M-Instruct.Q4_1.gguf), else llama.cpp's file type number.
QUANTIZATION = re.compile(r"(?<![A-Za-z0-9])(I?Q[0-9]_[A-Z0-9_]*[A-Z0-9]|I?Q[0-9]|BF16|F16|F32)(?![A-Za-z0-9])",
                          re.IGNORECASE)
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
              12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
              32: "BF16"}


@bp.get("/api/version")
def version():
    return {"version": VERSION}


@bp.get("/api/tags")
def tags():
    return {"models": [{"name": key, **described(key)} for key in current().settings.offered_models]}


@bp.get("/api/ps")
def running():
    """The models some live worker has loaded (workers announce theirs in Redis); none without a worker."""
    settings = current().settings
    return {"models": [{"name": key, **described(key), "expires_at": NEVER, "size_vram": 0,
                        "context_length": settings.models[key].n_ctx}
                       for key in settings.offered_models if progress.live_workers(key)]}


@bp.post("/api/show")
def show():
    data = request_body.json_body()
    name = (data.get("model") or data.get("name")) if isinstance(data, dict) else None  # "name": older clients
    if not isinstance(name, str):
        raise APIError(400, "invalid_request", "model: a model name is required")
    key = offered(name)
    settings = current().settings
    model, metadata = settings.models[key], gguf_metadata(key)
    params = settings.params_for(key)
    parameters = {option: getattr(params, field) for option, field in OPTIONS.items()
                  if option not in ("seed", "stop") and getattr(params, field) is not None}
    lines = [f"{option} {value}" for option, value in parameters.items()]
    lines += [f"stop {json.dumps(stop)}" for stop in params.stop]
    system = [f"SYSTEM {json.dumps(model.system_prompt)}"] if model.system_prompt else []
    facts = described(key)
    return {
        "license": "",
        "modelfile": "\n".join([f"# Served by Llamalith from its settings for '{key}'", f"FROM {model.path.name}",
                                *system, *(f"PARAMETER {line}" for line in lines)]),
        "parameters": "\n".join(lines),
        "template": model.chat_format or metadata.get("tokenizer.chat_template", ""),
        "system": model.system_prompt or "",
        "details": facts["details"],
        "model_info": {name: _number(value) for name, value in metadata.items() if not name.startswith("tokenizer.")}
        | {"llamalith.n_ctx": model.n_ctx},
        "capabilities": ["completion", "embedding"] if model.embeddings else ["completion"],
        "modified_at": facts["modified_at"],
    }


def offered(name: str) -> str:
    """The model's key, or Ollama's 404 for a model it does not have."""
    key = model_key(name)
    if key not in current().settings.offered_models:
        raise APIError(404, "model_not_found", f"model '{name}' not found", param="model")
    return key


def described(key: str) -> dict[str, Any]:
    """A model as /api/tags lists it: its file's size and time, a digest that changes when the file does (of its
    size and time, not its bytes: hashing a large GGUF file on every listing would take seconds), and details."""
    path = current().settings.models[key].path
    stat = path.stat()
    metadata = gguf_metadata(key)
    family = metadata.get("general.architecture", "")
    quantization = QUANTIZATION.search(path.name)
    return {
        "model": key,
        "modified_at": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat().replace("+00:00", "Z"),
        "size": stat.st_size,
        "digest": hashlib.sha256(f"{key}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest(),
        "details": {
            "parent_model": "", "format": "gguf", "family": family, "families": [family] if family else [],
            "parameter_size": metadata.get("general.size_label", ""),
            "quantization_level": quantization.group(1).upper() if quantization
            else FILE_TYPES.get(_number(metadata.get("general.file_type", "")), ""),
        },
    }


def gguf_metadata(key: str) -> dict[str, str]:
    """The GGUF's metadata, read by the tokenizer the web process keeps per model anyway (vocabulary only, loaded
    once); none when the file cannot be loaded (the server log says why)."""
    try:
        return dict(current().tokenizers.get(key).llm.metadata)
    except ModelLoadError:
        return {}


def _number(value: str) -> int | float | str:
    """llama.cpp gives every metadata value as text; numbers read back as numbers, as Ollama's model_info has them."""
    for kind in (int, float):
        try:
            number = kind(value)
        except (TypeError, ValueError):
            continue
        return number if math.isfinite(number) else value
    return value
