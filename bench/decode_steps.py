"""Where continuous batching's gain goes (issue 20's throughput target): the engine's own step times, in process.

    .venv/bin/python bench/decode_steps.py [--max-tokens 128] [--threads 2] [--batch] [--exact]

No web, no Redis, no worker: the default model in a `ModelCache` as a worker loads it, four prompts run one after
another on a one-sequence context (`parallel` 1) and then together on a four-sequence one (`parallel` 4, shared
cells as by default), greedy, for two prompt sets: short (about 40 prompt tokens each) and long (about 390, the
longest of bench/batching.py). Each `llama_decode` step is timed; a row gives the median step that only decodes
(one token for each of 1 or 4 sequences), the prefill steps' total, and the whole run, and the ratio of four
sequences' decode rate to one's. When the four-sequence step costs four one-sequence steps, batching cannot gain:
these figures say how much of bench/batching.py's aggregate gain the engine itself leaves. The sequences are
interactive (a prompt beside decoding ones is read PREFILL_CHUNK tokens a step); `--batch` runs them as batch work;
`--exact` gives the four-sequence context cells of its own per sequence (`LLM_PARALLEL_EXACT`).
"""

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.llm import ModelCache, Sequence, fit_prompt, models  # noqa: E402
from app.llm.engine import Engine  # noqa: E402
from bench.batching import text  # noqa: E402
from bench.summary import summary  # noqa: E402
from config import DEFAULT_MODEL_KEY, load_settings  # noqa: E402
from tests.stack import MODEL_PATHS  # noqa: E402

PROMPTS = {"short": 0, "long": 3}  # bench/batching.py's shortest and longest prompts: about 40 and 390 tokens


class TimedEngine(Engine):
    """The engine, recording each step: (sequences decoding, whether a prompt was being read, seconds)."""

    steps: list[tuple[int, bool, float]] = []

    def _step(self) -> None:
        decoding = sum(s.next_token is not None for s in self.running)
        prefill = any(s.prefilling for s in self.running)
        started = time.perf_counter()
        super()._step()
        self.steps.append((decoding, prefill, time.perf_counter() - started))


def run(settings, parallel: int, prompts: list[str], max_tokens: int, threads: int,
        interactive: bool, exact: bool = False) -> tuple[float, float, float]:
    """(median decode-only step, prefill steps' total, whole run) in seconds."""
    cache = ModelCache(settings.models, capacity=1, threads=threads, state_bytes=0, parallel=parallel, exact=exact)
    model = cache.get(DEFAULT_MODEL_KEY)
    params = settings.params_for(DEFAULT_MODEL_KEY, {"temperature": 0, "max_tokens": max_tokens})

    def answer(prompt: str) -> None:
        fitted = fit_prompt(model, None, [], prompt, max_tokens, settings.safety_margin)
        for _ in model.generate(Sequence(fitted.tokens, params, model.stop_strings(fitted.messages),
                                         interactive=interactive)):
            pass

    TimedEngine.steps = []
    started = time.perf_counter()
    for wave in range(0, len(prompts), parallel):
        threads_ = [threading.Thread(target=answer, args=(p,)) for p in prompts[wave: wave + parallel]]
        for thread in threads_:
            thread.start()
        for thread in threads_:
            thread.join()
    whole = time.perf_counter() - started
    model.close()
    decode = [seconds for decoding, prefill, seconds in TimedEngine.steps if decoding == parallel and not prefill]
    prefill = sum(seconds for _, prefill, seconds in TimedEngine.steps if prefill)
    return statistics.median(decode), prefill, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (a worker's default: the CPUs)")
    parser.add_argument("--batch", action="store_true", help="batch work, not interactive: prompts beside decoding "
                                                             "sequences are read as fast as the batch holds")
    parser.add_argument("--exact", action="store_true", help="four sequences with cells of their own, each prompt "
                                                             "chunk read alone (LLM_PARALLEL_EXACT)")
    args = parser.parse_args()
    models.Engine = TimedEngine  # what ModelCache builds for each model it loads
    settings = load_settings({**MODEL_PATHS, "SECRET_KEY": "bench", "LLM_MODELS": DEFAULT_MODEL_KEY})
    for name, paragraphs in PROMPTS.items():
        prompts = [text(n, f"{name}-{time.time_ns()}", length=paragraphs) for n in range(4)]
        one = run(settings, 1, prompts, args.max_tokens, args.threads, not args.batch)
        four = run(settings, 4, prompts, args.max_tokens, args.threads, not args.batch, args.exact)
        for label, (step, prefill, whole) in (("1 sequence ", one), ("4 sequences", four)):
            print(f"{name:<5} prompts, {label}: decode step {step * 1000:5.1f} ms, prefill {prefill:5.2f} s, "
                  f"run {whole:5.2f} s", flush=True)
        summary(f"{name} prompts: decode tok/s, 4 sequences vs 1", 4 / four[0], 1 / one[0], "-")
        summary(f"{name} prompts: whole run, 4 together vs one after another", one[2], four[2], "-")


if __name__ == "__main__":
    main()
