"""Multi-turn chats, interleaved: what per-conversation KV state saves. In one process, on the model layer the
worker uses (no HTTP: bench/overhead.py measures that part):

    .venv/bin/python bench/multiturn.py [--conversations 4] [--turns 6]

Conversations share a ~250-token system prompt and take turns one after another (conversation 1 turn 1,
conversation 2 turn 1, ..., conversation 1 turn 2, ...), so each turn follows another conversation's. For every
turn it times the first token four ways, on the same prompts: with the state cache; without it (llama.cpp's own
reuse of the last prompt only); raw llama-cpp-python `create_completion` on the same tokens (the baseline); and
the warm-prefix limit (the same turns, one conversation after another, so the previous prompt is always this
conversation's). Answers are greedy; it also prints how many turns got identical prompts and answers each way
(llama.cpp's sums differ in the last bits when a prompt is split into other batches, so a long greedy answer can
part ways). Prints medians and ratios to raw; record them in docs/benchmarks.md.
"""

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.llm import ModelCache  # noqa: E402
from app.llm.prompt import Turn, build_messages  # noqa: E402
from config import DEFAULT_MODEL_KEY, load_settings  # noqa: E402
from tests.stack import MODEL_PATHS  # noqa: E402

TOPICS = ["the sea", "a forest", "the moon", "a city", "mountains", "rain", "a library", "the desert"]
SYSTEM = ("You are a helpful assistant who answers in short, plain sentences. " * 2 + "Rules: " + " ".join(
    f"Rule {n}: be accurate, be kind, and say when you are not sure." for n in range(1, 13)))


def first_token_ms(model, tokens: list[int], params, stop: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    pieces, first = [], None
    for piece in model.generate(tokens, params, stop):
        first = first or time.perf_counter()
        pieces.append(piece)
    return ((first or time.perf_counter()) - started) * 1000, "".join(pieces)


def raw_first_token_ms(llm, tokens: list[int], params, stop: list[str]) -> float:
    started = time.perf_counter()
    for _ in llm.create_completion(tokens, stream=True, max_tokens=params.max_tokens, temperature=0,
                                   top_k=params.top_k, top_p=params.top_p, repeat_penalty=params.repeat_penalty,
                                   stop=stop):
        return (time.perf_counter() - started) * 1000
    return (time.perf_counter() - started) * 1000


def run(order, conversations: int, turns: int, model, params) -> dict[tuple[int, int], tuple[float, list[int], str]]:
    """Play the turns in `order` ((conversation, turn) pairs); histories grow with the answers given."""
    histories: dict[int, list[Turn]] = {c: [] for c in range(conversations)}
    timings = {}
    for conversation, turn in order:
        question = f"Tell me something new about {TOPICS[conversation % len(TOPICS)]} (part {turn + 1})."
        messages = build_messages(SYSTEM, histories[conversation], question, model.folds_system)
        tokens = model.tokenize(messages)
        elapsed, text = first_token_ms(model, tokens, params, model.stop_strings(messages))
        timings[(conversation, turn)] = (elapsed, tokens, text)
        histories[conversation].append(Turn(question, text))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    settings = load_settings({**MODEL_PATHS, "SECRET_KEY": "bench", "LLM_MODELS": DEFAULT_MODEL_KEY})
    params = settings.params_for(DEFAULT_MODEL_KEY, {"temperature": 0, "max_tokens": args.max_tokens})
    interleaved = [(c, t) for t in range(args.turns) for c in range(args.conversations)]
    one_by_one = [(c, t) for c in range(args.conversations) for t in range(args.turns)]

    cached = ModelCache(settings.models, 1, state_bytes=settings.kv_cache_mb * 1024 * 1024).get(DEFAULT_MODEL_KEY)
    with_cache = run(interleaved, args.conversations, args.turns, cached, params)
    plain = ModelCache(settings.models, 1).get(DEFAULT_MODEL_KEY)
    without = run(interleaved, args.conversations, args.turns, plain, params)
    warm = run(one_by_one, args.conversations, args.turns, ModelCache(settings.models, 1).get(DEFAULT_MODEL_KEY),
               params)
    for name, other in (("no state cache", without), ("warm prefix", warm)):
        same = sum(with_cache[key][1:] == other[key][1:] for key in with_cache)
        print(f"prompts and answers identical with the state cache and with {name}: {same} of {len(with_cache)}")
    raw = {key: raw_first_token_ms(plain.llm, tokens, params, [])
           for key, (_, tokens, _) in ((key, with_cache[key]) for key in interleaved)}

    def median(timings, first_turn: bool) -> float:
        return statistics.median(value[0] if isinstance(value, tuple) else value for (c, t), value in timings.items()
                                 if (t == 0) == first_turn)

    print(f"model {DEFAULT_MODEL_KEY}, {args.conversations} conversations x {args.turns} turns, interleaved, "
          f"{len(with_cache[(0, args.turns - 1)][1])} prompt tokens by the last turn, {os.cpu_count()} cpus")
    print(f"{'time to first token, median':<34}{'turn 1':>10}{'turns 2+':>10}{'vs raw':>8}")
    raw_later = median(raw, False)
    for name, timings in (("raw llama-cpp-python (baseline)", raw), ("state cache", with_cache),
                          ("no state cache", without), ("warm prefix (one by one)", warm)):
        later = median(timings, False)
        print(f"{name:<34}{median(timings, True):>8.0f}ms{later:>8.0f}ms{later / raw_later:>8.2f}")
    print(f"state cache: {cached.states.hits} restores, {cached.states.size / 1e6:.1f} MB kept; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
