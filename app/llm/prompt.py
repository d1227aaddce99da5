"""Conversation -> prompt tokens: history trimmed oldest-first so the answer still fits in the context."""

from dataclasses import dataclass


@dataclass
class Turn:
    """One exchange of a conversation: the user's message and the answer (None while there is none yet)."""

    user: str | None
    assistant: str | None
    job_id: int | None = None  # the job that answered; None for messages whose job row is gone

    @property
    def complete(self) -> bool:
        return self.user is not None and self.assistant is not None


@dataclass
class Prompt:
    tokens: list[int]
    messages: list[dict]
    dropped_turns: int


class ContextTooLong(Exception):
    """The system prompt and the new input alone leave no room for the answer."""


def build_messages(system_prompt: str | None, history: list[Turn], user_input: str, folds_system: bool) -> list[dict]:
    messages = []
    for turn in history:  # a turn sent by a client may lack either side
        messages += [{"role": role, "content": text} for role, text in (("user", turn.user),
                                                                         ("assistant", turn.assistant)) if text is not None]
    messages.append({"role": "user", "content": user_input})
    if system_prompt:
        if folds_system:
            messages[0] = {"role": "user", "content": f"{system_prompt}\n\n{messages[0]['content']}"}
        else:
            messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def fit_prompt(model, system_prompt: str | None, history: list[Turn], user_input: str, max_tokens: int,
               safety_margin: int) -> Prompt:
    """Keep the newest turns that fit in `n_ctx - max_tokens - safety_margin` (binary search on the cut)."""
    budget = model.settings.n_ctx - max_tokens - safety_margin

    def attempt(start: int) -> Prompt:
        messages = build_messages(system_prompt, history[start:], user_input, model.folds_system)
        return Prompt(model.tokenize(messages), messages, start)

    shortest = attempt(len(history))
    if len(shortest.tokens) > budget:
        raise ContextTooLong(
            f"the system prompt and input take {len(shortest.tokens)} tokens, but model '{model.key}' has room for "
            f"{max(budget, 0)} (n_ctx {model.settings.n_ctx} - max_tokens {max_tokens} - margin {safety_margin}); "
            "shorten the input or lower max_tokens"
        )
    low, high, best = 0, len(history), shortest
    while low < high:
        middle = (low + high) // 2
        candidate = attempt(middle)
        if len(candidate.tokens) <= budget:
            best, high = candidate, middle
        else:
            low = middle + 1
    return best


def check_fits(model, system_prompt: str | None, user_input: str, max_tokens: int, safety_margin: int) -> None:
    """Raise ContextTooLong unless the system prompt and input alone fit, tokenizing them only when they might not.
    Every token of a prompt stands for at least one of its bytes (byte-level BPE and SentencePiece's byte fallback
    alike; a special token's text is longer than the space it may add), so a prompt of fewer bytes than the budget
    fits; most do, and tokenizing costs about a millisecond (a minute for a batch file of 50,000 lines)."""
    prompt = model.format_chat(messages=build_messages(system_prompt, [], user_input, model.folds_system)).prompt
    if len(prompt.encode()) + 1 <= model.settings.n_ctx - max_tokens - safety_margin:  # + 1: a BOS token
        return
    fit_prompt(model, system_prompt, [], user_input, max_tokens, safety_margin)
