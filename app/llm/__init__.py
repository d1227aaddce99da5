"""Models by key: settings become a warm `Llama`, a conversation becomes a prompt, a prompt becomes tokens, and
tokens are generated for many sequences at once."""

from app.llm.engine import Sequence
from app.llm.models import LoadedModel, ModelCache, ModelLoadError
from app.llm.prompt import ContextTooLong, Turn, check_fits, fit_prompt
from app.llm.settings import GenerationParams, ModelSettings

__all__ = ["ContextTooLong", "GenerationParams", "LoadedModel", "ModelCache", "ModelLoadError", "ModelSettings",
           "Sequence", "Turn", "check_fits", "fit_prompt"]
