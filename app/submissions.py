"""What every face (the API, the chat form) checks before a prompt becomes a job, in one place. A refusal is a
`Refused` with a machine code; each blueprint turns it into its own answer (JSON error, message on the form)."""

import re

from app.extensions import current
from app.llm import ContextTooLong, ModelLoadError, fit_prompt

# Conversation ids travel in URLs and JSON: short, printable, no separators that need escaping.
CONVERSATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
MAX_INPUT_CHARS = 1_000_000
MAX_SYSTEM_PROMPT_CHARS = 100_000


class Refused(Exception):
    """The submission cannot become a job; `code` says why for machines, the message for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def valid_conversation_id(value: str) -> bool:
    return CONVERSATION_ID.fullmatch(value) is not None


def check(model: str | None, system_prompt: str | None, user_input: str, overrides: dict) -> tuple[str, str | None]:
    """The model to use and the system prompt the job records: the model's default when none is given
    (an empty string asks for none). Refuses an unknown model, or an input that cannot fit even without history."""
    settings = current().settings
    model = model or settings.default_model
    if model not in settings.offered_models:
        raise Refused("unknown_model", f"unknown model '{model}'; available: {', '.join(settings.offered_models)}")
    if system_prompt is None:
        system_prompt = settings.models[model].system_prompt
    max_tokens = settings.params_for(model, overrides).max_tokens
    try:
        fit_prompt(current().tokenizers.get(model), system_prompt, [], user_input, max_tokens, settings.safety_margin)
    except ContextTooLong as exc:
        raise Refused("context_length_exceeded", str(exc)) from None
    except ModelLoadError as exc:
        raise Refused("model_unavailable", str(exc)) from None
    return model, system_prompt or None
