"""What a model is (`ModelSettings`) and how it samples (`GenerationParams`): the one definition that settings
files, the API's request bodies, the chat form and the worker all validate against."""

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.llm import grammar


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GenerationParams(Strict):
    """Sampling knobs. Defined once: global defaults, per-model defaults and per-request overrides."""

    max_tokens: int = Field(512, ge=1, le=32768, description="most tokens the answer may have")
    temperature: float = Field(0.8, ge=0, le=5, description="randomness; 0 always picks the likeliest token")
    top_p: float = Field(0.95, gt=0, le=1, description="sample only from the likeliest tokens covering this mass")
    top_k: int = Field(40, ge=0, le=1000, description="sample only from this many likeliest tokens; 0: all")
    repeat_penalty: float = Field(1.1, ge=0, le=5, description="above 1 discourages repeating recent tokens")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="above 0 discourages a token the more often it "
                                                                     "appeared already (OpenAI's bounds)")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="above 0 discourages any token that appeared "
                                                                    "already (OpenAI's bounds)")
    mirostat_mode: int = Field(0, ge=0, le=2, description="Mirostat sampling: 0 off, 1 or 2")
    mirostat_tau: float = Field(5.0, ge=0, le=20, description="Mirostat's target surprise")
    mirostat_eta: float = Field(0.1, ge=0, le=1, description="Mirostat's learning rate")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="fixed seed for reproducible sampling")
    stop: list[str] = Field(default_factory=list, max_length=8, description="strings that end the answer")
    json_schema: dict[str, Any] | None = Field(None, description=(
        "the answer is JSON valid against this schema, sampled under a grammar (docs/structured-outputs.md)"))
    json_optional: bool = Field(False, description=(
        "with `json_schema`: the answer may be plain text instead (not starting with `{`), as a tool call may"))

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_string(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("json_schema")
    @classmethod
    def _enforceable(cls, value: dict | None) -> dict | None:
        if value is not None:
            grammar.check(value)
        return value


class ModelSettings(Strict):
    """One offered model: its GGUF and how to load and prompt it."""

    path: Path = Field(description="the GGUF file", json_schema_extra={"shown_default": "required"})
    description: str = Field("", max_length=300, json_schema_extra={"shown_default": "empty"},
                             description="one line shown in `GET /api/models` and the chat's model list")
    chat_format: str | None = Field(
        None, json_schema_extra={"shown_default": "the GGUF's chat template"},
        description="a llama-cpp-python format name (`chatml`, `llama-3`, `gemma`, `mistral-instruct`, `alpaca`, "
                    "...). A GGUF without a template (many Llama-2-era files) needs one; its jobs otherwise fail "
                    "with a message naming `<KEY>_CHAT_FORMAT`")
    system_prompt: str | None = Field(None, max_length=100_000, description=(
        "used by a job that brings none (the API's `system_prompt` omitted, the chat's field left empty); the job "
        "records it"))
    n_ctx: int = Field(4096, ge=256, description="context length in tokens (prompt and answer)")
    n_threads: int | None = Field(None, ge=1, description="llama.cpp threads",
                                  json_schema_extra={"shown_default": "`LLM_THREADS`, else the number of CPUs"})
    n_batch: int = Field(512, ge=1, description="tokens decoded per step (every running sequence's next token and "
                                                "chunks of new prompts)")
    parallel: int | None = Field(None, ge=1, le=64, json_schema_extra={"shown_default": "`LLM_PARALLEL`"},
                                 description="sequences a worker decodes together for this model (continuous "
                                             "batching); they share its `n_ctx` cells")
    params: dict[str, Any] = Field(default_factory=dict, description=(
        "this model's generation defaults, over the `generation` settings"))
    embeddings: bool = Field(True, json_schema_extra={"shown_default": "`true`"}, description=(
        "whether `/v1/embeddings` and Ollama's `/api/embed` may use it: the mean of its last hidden states, "
        "L2-normalised (docs/openai.md, Embeddings). A chat model's vectors are a baseline, not a retrieval "
        "model's; `false` refuses them with a 400 naming the model"))

    @field_validator("path")
    @classmethod
    def _gguf_exists(cls, path: Path) -> Path:
        if not path.is_file():
            raise ValueError(f"GGUF file not found: {path}")
        return path

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        GenerationParams(**params)
        return params


def model_variable(key: str, suffix: str) -> str:
    """The environment variable that sets one field of model `key`: ("smollm2-135m", "PATH") -> SMOLLM2_135M_PATH."""
    return "".join(c if c.isalnum() else "_" for c in key.upper()) + "_" + suffix


# Per-model environment variables (<KEY>_PATH, ...) and the ModelSettings field each sets.
MODEL_VARIABLES = {"PATH": "path", "CHAT_FORMAT": "chat_format", "SYSTEM_PROMPT": "system_prompt",
                   "PARALLEL": "parallel", "EMBEDDINGS": "embeddings"}
