"""Per-conversation KV state with the real models: restored states give exactly the tokens a fresh evaluation
gives, a turn's prompt starts with the previous turn's, conversations never get each other's states, and the cache
stays under its byte cap."""

import threading

import llama_cpp
import pytest

from app.llm import ModelCache, Sequence
from app.llm.prompt import Turn, build_messages
from app.llm.state import common_prefix
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
    text = "".join(model.generate(Sequence(prompt, GREEDY, model.stop_strings(messages), model.opening(system, prompt))))
    return prompt, text


def restore(model, prompt: list[int]) -> int:
    """What a turn with `prompt` would restore (into sequence 0, emptied again after: the engine is idle)."""
    restored = model.states.restore(model.key, model.engine.ctx, 0, prompt)
    llama_cpp.llama_memory_seq_rm(model.engine.memory, 0, -1, -1)
    return restored


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
    assert restore(model, second) >= len(first)  # its own first turn (and its answer), not the other's prompt
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
    assert restore(cached, prompt) == opening
    assert answer(cached, [], "Name an animal.") == answer(plain, [], "Name an animal.")


@pytest.mark.parametrize("key", ["smollm2-135m", "gemma3-270m"])
def test_the_next_prompt_starts_with_the_previous_prompt_and_the_answers_own_ids(key):
    model = models(256 * 1024 * 1024).get(key)
    first, text = answer(model, [], "Name a colour.")
    answered = max((tokens for key, tokens in model.states.states if key == model.key and tokens[: len(first)] ==
                    tuple(first)), key=len)  # kept after the answer: the prompt and the ids the model generated
    assert len(answered) > len(first) and answered[: len(first)] == tuple(first)
    second = model.tokenize(build_messages(SYSTEM, [Turn("Name a colour.", text)], "And another?", model.folds_system))
    assert tuple(second[: len(answered)]) == answered


@pytest.mark.parametrize("key", ["smollm2-135m", "gemma3-270m"])
def test_interleaved_turns_through_the_batch_answer_as_one_at_a_time_from_their_own_states(key):
    """Four conversations of three turns; each round's four turns run at once through a batch of four sequences with
    cells of their own (`exact`) and kept states, in threads as the worker's slots run them; the same turns one at a
    time, without kept states, answer the same token for token. Every restore uses the conversation's own ids: a
    first turn restores at most the system prompt every conversation shares, a later one at least its own previous
    prompt, and more than it shares with any other conversation's prompt; the cells restored are those of exactly
    the ids restored."""
    settings = load_settings({**MODEL_PATHS, "SECRET_KEY": "x"}).models
    batched = ModelCache(settings, capacity=1, parallel=4, exact=True, state_bytes=256 * 1024 * 1024).get(key)
    alone = ModelCache(settings, capacity=1, parallel=1).get(key)
    restored: list[tuple[tuple[int, ...], int, int]] = []  # (prompt, tokens restored, the sequence's last position)
    keep_restore = batched.states.restore

    def spy(model_key, ctx, seq_id, prompt):
        count = keep_restore(model_key, ctx, seq_id, prompt)
        restored.append((tuple(prompt), count, llama_cpp.llama_memory_seq_pos_max(batched.engine.memory, seq_id)))
        return count

    batched.states.restore = spy
    histories: dict[str, list[Turn]] = {topic: [] for topic in ("sea", "moon", "bread", "rivers")}
    prompts: dict[str, list[tuple[int, ...]]] = {topic: [] for topic in histories}
    for turn in range(3):
        questions = {topic: f"Tell me one more fact about the {topic} (fact {turn + 1})." for topic in histories}
        answered: dict[str, tuple[list[int], str]] = {}
        threads = [threading.Thread(target=lambda topic=topic: answered.__setitem__(
            topic, answer(batched, histories[topic], questions[topic]))) for topic in histories]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for topic, history in histories.items():
            assert answered[topic] == answer(alone, history, questions[topic]), (turn, topic)
            prompts[topic].append(tuple(answered[topic][0]))
            history.append(Turn(questions[topic], answered[topic][1]))
    owner = {prompt: topic for topic, own in prompts.items() for prompt in own}
    assert len(restored) == 12 and {prompt for prompt, _, _ in restored} == set(owner)
    opening = batched.opening(SYSTEM, next(iter(owner)))
    for prompt, count, last in restored:
        topic = owner[prompt]
        turn = prompts[topic].index(prompt)
        others = max(common_prefix(prompt, other) for other in owner if owner[other] != topic)
        assert last == count - 1  # the sequence holds the restored cells, no more (-1: none)
        if turn == 0:
            assert count <= opening
        else:
            assert count >= len(prompts[topic][turn - 1]) > others
    assert batched.states.hits >= 8  # every later turn started from its own conversation's state
