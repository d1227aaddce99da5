"""Models by key: settings become a warm `Llama`, a conversation becomes a prompt, a prompt becomes tokens."""

from app.llm.models import LoadedModel, ModelCache, ModelLoadError
from app.llm.prompt import ContextTooLong, Turn, fit_prompt

__all__ = ["ContextTooLong", "LoadedModel", "ModelCache", "ModelLoadError", "Turn", "fit_prompt"]
