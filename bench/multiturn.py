"""Multi-turn chats, interleaved: what per-conversation KV state and conversation affinity save.

    .venv/bin/python bench/multiturn.py [--conversations 4] [--turns 6] [--max-tokens 64]

Conversations share a ~250-token system prompt and take turns one after another (conversation 1 turn 1,
conversation 2 turn 1, ..., conversation 1 turn 2, ...), so each turn follows another conversation's.

1. In one process, on the model layer the worker uses (no HTTP: bench/overhead.py measures that part), the time to
   first token of the same prompts four ways: with the state cache; without it (llama.cpp's own reuse of the last
   prompt only); raw llama-cpp-python `create_completion` on the same tokens (the baseline); and the warm-prefix
   limit (the same turns one conversation after another, so the previous prompt is always this conversation's).
   Then new conversations with the shared system prompt, each after a control prompt with a system prompt never
   seen (which must not get faster: no false speed-up), with the cache and raw.
2. Through the whole stack (web, Redis, workers with KV_CACHE_MB), the same interleaved turns with one worker and
   then two (LLM_THREADS = cpus / workers): the workers' own time to first token (`usage.first_token_ms`), how
   many later turns ran on the worker holding their conversation, and each worker's peak RSS next to its size
   before any turn plus the state cache's cap.

Answers are greedy. Prints medians and ratios; record them in docs/benchmarks.md.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.llm import ModelCache, Sequence  # noqa: E402
from app.llm.prompt import Turn, build_messages  # noqa: E402
from bench.summary import summary  # noqa: E402
from config import DEFAULT_MODEL_KEY, load_settings  # noqa: E402
from tests.stack import MODEL_PATHS, Stack, start_redis  # noqa: E402

TOPICS = ["the sea", "a forest", "the moon", "a city", "mountains", "rain", "a library", "the desert"]
SYSTEM = ("You are a helpful assistant who answers in short, plain sentences. " * 2 + "Rules: " + " ".join(
    f"Rule {n}: be accurate, be kind, and say when you are not sure." for n in range(1, 13)))
CONTROL = "You are a terse librarian. Reply with a list."


def question(conversation: int, turn: int) -> str:
    return f"Tell me something new about {TOPICS[conversation % len(TOPICS)]} (part {turn + 1})."


def first_token_ms(model, tokens: list[int], params, stop: list[str], opening: int) -> tuple[float, str]:
    started = time.perf_counter()
    pieces, first = [], None
    for piece in model.generate(Sequence(tokens, params, stop, opening)):
        if piece:
            first = first or time.perf_counter()
            pieces.append(piece)
    return ((first or time.perf_counter()) - started) * 1000, "".join(pieces)


def raw_first_token_ms(llm, tokens: list[int], params) -> float:
    started = time.perf_counter()
    for _ in llm.create_completion(tokens, stream=True, max_tokens=params.max_tokens, temperature=0,
                                   top_k=params.top_k, top_p=params.top_p, repeat_penalty=params.repeat_penalty):
        break
    return (time.perf_counter() - started) * 1000


def play(order, model, params) -> dict:
    """Play `order` ((conversation, turn, system prompt) triples) as the worker would: each conversation's history
    grows with the answers given. (time to first token, prompt tokens, answer) per triple."""
    histories: dict[int, list[Turn]] = {}
    timings = {}
    for conversation, turn, system in order:
        history = histories.setdefault(conversation, [])
        messages = build_messages(system, history, question(conversation, turn), model.folds_system)
        tokens = model.tokenize(messages)
        elapsed, text = first_token_ms(model, tokens, params, model.stop_strings(messages),
                                       model.opening(system, tokens))
        timings[(conversation, turn, system)] = (elapsed, tokens, text)
        history.append(Turn(question(conversation, turn), text))
    return timings


def median(timings: dict, keys) -> float:
    return statistics.median(timings[key][0] if isinstance(timings[key], tuple) else timings[key] for key in keys)


def in_process(settings, params, conversations: int, turns: int) -> None:
    interleaved = [(c, t, SYSTEM) for t in range(turns) for c in range(conversations)]
    one_by_one = sorted(interleaved)
    # New conversations (numbered after the others), each after a control conversation with an unseen system prompt.
    newcomers = [entry for c in range(conversations) for entry in
                 ((100 + c, 0, f"{CONTROL} Shelf {c}."), (conversations + c, 0, SYSTEM))]

    def model(state_bytes: int = 0):
        return ModelCache(settings.models, 1, state_bytes=state_bytes).get(DEFAULT_MODEL_KEY)

    cached = model(settings.kv_cache_mb * 1024 * 1024)
    with_cache = play(interleaved + newcomers, cached, params)
    plain = model()
    without = play(interleaved, plain, params)
    warm = play(one_by_one, model(), params)
    for name, other in (("no state cache", without), ("warm prefix", warm)):
        same = sum(with_cache[key][1:] == other[key][1:] for key in other)
        print(f"prompts and answers identical with the state cache and with {name}: {same} of {len(other)}")
    raw = {key: raw_first_token_ms(plain.llm, with_cache[key][1], params) for key in interleaved + newcomers}

    later = [key for key in interleaved if key[1] > 0]
    joining = [key for key in newcomers if key[2] == SYSTEM]
    controls = [key for key in newcomers if key[2] != SYSTEM]
    print(f"\n1. in one process: model {DEFAULT_MODEL_KEY}, {conversations} conversations x {turns} turns "
          f"interleaved, {len(with_cache[interleaved[-1]][1])} prompt tokens by the last turn, {os.cpu_count()} cpus")
    print(f"{'time to first token, median':<36}{'turn 1':>9}{'turns 2+':>10}{'vs raw':>8}")
    raw_later = median(raw, later)
    for name, timings in (("raw llama-cpp-python (baseline)", raw), ("state cache", with_cache),
                          ("no state cache", without), ("warm prefix (one by one)", warm)):
        first = [key for key in interleaved if key[1] == 0]
        print(f"{name:<36}{median(timings, first):>7.0f}ms{median(timings, later):>8.0f}ms"
              f"{median(timings, later) / raw_later:>8.2f}")
    new_ratio = median(with_cache, joining) / median(raw, joining)
    control_ratio = median(with_cache, controls) / median(raw, controls)
    print(f"new conversation, system prompt seen before: {median(with_cache, joining):.0f} ms vs raw "
          f"{median(raw, joining):.0f} ms ({new_ratio:.2f}); control, system prompt never seen: "
          f"{median(with_cache, controls):.0f} ms vs raw {median(raw, controls):.0f} ms ({control_ratio:.2f})")
    print(f"state cache: {cached.states.hits} restores, {cached.states.size / 2**20:.1f} MiB kept")
    cache_later = median(with_cache, later)
    summary("later turns, first token (ms)", cache_later, raw_later, "<= 0.3")
    summary("later turns vs warm-prefix limit", cache_later, median(warm, later), "<= 1.3")
    summary("later turns vs no state cache", cache_later, median(without, later), "<= 0.2")
    summary("new conversation, seen system prompt", median(with_cache, joining), median(raw, joining), "<= 0.5")
    summary("control prompt (never seen)", median(with_cache, controls), median(raw, controls), ">= 0.8")


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def through_stack(workers: int, conversations: int, turns: int, max_tokens: int) -> dict:
    """The interleaved turns through web + Redis + `workers` workers: first_token_ms per turn, affinity, RSS."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        redis, socket = start_redis(folder)
        environ = {"LLAMALITH_INSTANCE": str(folder / "instance"), "REDIS_URL": f"unix://{socket}",
                   "SECRET_KEY": "bench", "LLM_MODELS": DEFAULT_MODEL_KEY,
                   "LLM_THREADS": str(max(1, (os.cpu_count() or 2) // workers)), **MODEL_PATHS}
        stack = Stack(environ, folder)
        try:
            stack.start_web()
            pids = [stack.start_worker().pid for _ in range(workers)]
            warm_up = [stack.submit(user_input="Hello.", session_id=f"warm-{n}", system_prompt=CONTROL,
                                    max_tokens=4)["job_id"] for n in range(workers)]
            for job_id in warm_up:  # llama.cpp's first evaluation in a process allocates its buffers
                stack.wait_job(job_id)
            before = [peak_rss_mb(pid)[0] for pid in pids]
            ids = {}
            for turn in range(turns):
                for conversation in range(conversations):
                    job = stack.submit(user_input=question(conversation, turn), session_id=f"bench-{conversation}",
                                       system_prompt=SYSTEM, max_tokens=max_tokens, temperature=0)
                    ids[(conversation, turn)] = stack.wait_job(job["job_id"], timeout=300)
            peaks = [peak_rss_mb(pid)[1] for pid in pids]
            ran_on = dict(stack.query("SELECT id, worker FROM jobs"))
        finally:
            stack.stop()
            redis.terminate()
    worker_of = {key: ran_on[job["id"]] for key, job in ids.items()}
    kept = sum(worker_of[(c, t)] == worker_of[(c, t - 1)] for c, t in ids if t > 0)
    first_ms = {key: job["usage"]["first_token_ms"] for key, job in ids.items()}
    return {"first": statistics.median(v for (c, t), v in first_ms.items() if t == 0),
            "later": statistics.median(v for (c, t), v in first_ms.items() if t > 0),
            "kept": kept, "later_count": len([key for key in ids if key[1] > 0]), "before": before, "peaks": peaks}


def stack_runs(settings, conversations: int, turns: int, max_tokens: int) -> None:
    results = {workers: through_stack(workers, conversations, turns, max_tokens) for workers in (1, 2)}
    print(f"\n2. through the stack (first_token_ms as the worker measures it), KV_CACHE_MB {settings.kv_cache_mb}")
    print(f"{'workers':<9}{'turn 1':>9}{'turns 2+':>10}  {'on the same worker':<20}peak RSS per worker")
    for workers, run in results.items():
        rss = ", ".join(f"{peak:.0f} MB (from {start:.0f})" for start, peak in zip(run["before"], run["peaks"]))
        print(f"{workers:<9}{run['first']:>7.0f}ms{run['later']:>8.0f}ms  "
              f"{run['kept']:>3} of {run['later_count']:<13}{rss}")
    cap = settings.kv_cache_mb
    headroom = max(peak - start for run in results.values() for start, peak in zip(run["before"], run["peaks"]))
    two = results[2]
    summary("two workers: later turns on their conversation's worker", two["kept"], two["later_count"], ">= 1.0")
    summary("worker RSS growth (MB) vs KV_CACHE_MB", headroom, cap, "<= 1.2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    settings = load_settings({**MODEL_PATHS, "SECRET_KEY": "bench", "LLM_MODELS": DEFAULT_MODEL_KEY})
    params = settings.params_for(DEFAULT_MODEL_KEY, {"temperature": 0, "max_tokens": args.max_tokens})
    in_process(settings, params, args.conversations, args.turns)
    stack_runs(settings, args.conversations, args.turns, args.max_tokens)


if __name__ == "__main__":
    main()
