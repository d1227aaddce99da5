"""Per-conversation KV state with the real models: restored states give exactly the tokens a fresh evaluation
gives, a turn's prompt starts with the previous turn's, conversations never get each other's states, and the cache
stays under its byte cap."""

import pytest

from app.llm import ModelCache
from app.llm.prompt import Turn, build_messages
from config import load_settings
from tests.stack import MODEL_PATHS

pytestmark = pytest.mark.slow  # the real models, loaded by the tests themselves

GREEDY = load_settings({**MODEL_PATHS, "SECRET_KEY": "x"}).generation.model_copy(update={"temperature": 0,
                                                                                       "max_tokens": 16})
SYSTEM = "You are a helpful assistant. Answer briefly and accurately."


def models(state_bytes: int) -> ModelCache:
    return ModelCache(load_settings({**MODEL_PATHS, "SECRET_KEY": "x"}).models, capacity=2,
                      state_bytes=state_bytes)


def answer(model, turns: list[Turn], question: str, system: str = SYSTEM) -> tuple[list[int], str]:
    """As the worker answers: the system prompt's opening is kept too."""
    messages = build_messages(system, turns, question, model.folds_system)
    prompt = model.tokenize(messages)
    text = "".join(model.generate(prompt, GREEDY, model.stop_strings(messages), model.opening(system, prompt)))
    model.keep_state()
    return prompt, text


@pytest.mark.parametrize("key", ["smollm2-135m", "gemma3-270m"])
def test_interleaved_conversations_answer_exactly_as_without_the_cache(key):
    cached, plain = models(256 * 1024 * 1024).get(key), models(0).get(key)
    conversations = {"sea": [], "moon": []}
    for turn in range(3):
        for topic, history in conversations.items():
            question = f"Tell me one more fact about the {topic} (fact {turn + 1})."
            prompt, text = answer(cached, history, question)
            assert (prompt, text) == answer(plain, history, question)
            history.append(Turn(question, text))
    assert cached.states.hits >= 3  # the later turns started from their own conversation's state


def test_a_turns_prompt_starts_with_the_previous_turns_and_only_its_own_state_is_used():
    model = models(256 * 1024 * 1024).get("smollm2-135m")
    first, text = answer(model, [], "Name a colour.")
    other, _ = answer(model, [], "Name an animal.")  # same system prompt, another conversation in between
    second = model.tokenize(build_messages(SYSTEM, [Turn("Name a colour.", text)], "And another?", False))
    assert second[: len(first)] == first
    restored = model.states.restore(model.key, model.llm, second)
    assert restored >= len(first)  # its own first turn (and its answer), not the other conversation's prompt
    assert list(model.llm.input_ids[:restored]) == second[:restored]
    assert second[: len(other)] != other


def test_the_cache_stays_under_its_byte_cap():
    cap = 3 * 1024 * 1024
    model = models(cap).get("smollm2-135m")
    for n in range(6):
        answer(model, [], f"Write a sentence about the number {n}. " * 4)
        assert model.states.size <= cap
    assert 0 < len(model.states.states) < 6


@pytest.mark.parametrize("key", ["smollm2-135m", "gemma3-270m"])
def test_a_new_conversation_starts_from_its_system_prompts_state_and_answers_as_without_it(key):
    cached, plain = models(256 * 1024 * 1024).get(key), models(0).get(key)
    answer(cached, [], "Name a colour.")
    answer(cached, [], "Name a colour.", system="You are a pirate.")  # the model now holds another prefix
    messages = build_messages(SYSTEM, [], "Name an animal.", cached.folds_system)
    prompt = cached.tokenize(messages)
    opening = cached.opening(SYSTEM, prompt)
    assert len(cached.tokenize(build_messages(SYSTEM, [], "", cached.folds_system))) - 8 < opening < len(prompt)
    assert cached.states.restore(cached.key, cached.llm, prompt) == opening
    assert answer(cached, [], "Name an animal.") == answer(plain, [], "Name an animal.")


@pytest.mark.parametrize("key", ["smollm2-135m", "gemma3-270m"])
def test_the_next_prompt_starts_with_the_previous_prompt_and_the_answers_own_ids(key):
    model = models(256 * 1024 * 1024).get(key)
    first, text = answer(model, [], "Name a colour.")
    answered = tuple(model.llm.input_ids[: model.llm.n_tokens])  # the prompt and the ids the model generated
    assert len(answered) > len(first) and answered[: len(first)] == tuple(first)
    second = model.tokenize(build_messages(SYSTEM, [Turn("Name a colour.", text)], "And another?", model.folds_system))
    assert tuple(second[: len(answered)]) == answered
