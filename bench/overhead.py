"""What does the queue cost? The same prompts answered by llama-cpp-python directly and through the API
(submit -> Redis -> one warm worker -> SSE), alternating prompt by prompt, in one run on one machine.

    .venv/bin/python bench/overhead.py [--prompts 10] [--max-tokens 64]

Prints decode tokens/s both ways, their ratio, and the median per-job overhead: submit-to-first-token
through the API minus time-to-first-token calling the model directly. Record results in docs/benchmarks.md.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from app.llm import GenerationParams  # noqa: E402
from bench.summary import summary  # noqa: E402
from config import DEFAULT_MODEL_KEY, load_settings  # noqa: E402
from tests.sse import events  # noqa: E402
from tests.stack import MODEL_PATHS, Stack, start_redis  # noqa: E402

GREEDY = {"temperature": 0}  # both ways, so both produce the same tokens
TOPICS = ["the sea", "a forest", "a city at night", "winter", "a library", "the desert", "a train", "mountains",
          "a market", "the moon", "rain", "a lighthouse", "a garden", "a river", "an old castle", "the sky"]


def prompts(count: int) -> list[str]:
    return [f"Write a short paragraph about {TOPICS[i % len(TOPICS)]}." for i in range(count)]


def decode_rate(tokens: int, first: float, last: float) -> float:
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else float("nan")


def direct_run(llm, text: str, max_tokens: int, params: GenerationParams, system_prompt: str | None):
    """(time to first token, decode tokens/s) calling llama-cpp-python ourselves on the same chat (the GGUF's own
    template, the model's default system prompt), with the API's sampling."""
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": text}]
    started, stamps, text = time.perf_counter(), [], []
    for chunk in llm.create_chat_completion(messages, max_tokens=max_tokens, temperature=params.temperature,
                                            top_p=params.top_p, top_k=params.top_k,
                                            repeat_penalty=params.repeat_penalty, stream=True):
        if content := chunk["choices"][0]["delta"].get("content"):
            stamps.append(time.perf_counter())
            text.append(content)
    # Counted as the worker counts usage.completion_tokens: the answer's text tokenized again.
    tokens = len(llm.tokenize("".join(text).encode(), add_bos=False))
    return stamps[0] - started, decode_rate(tokens, stamps[0], stamps[-1])


def api_run(stack: Stack, text: str, max_tokens: int, conversation: str) -> tuple[float, float]:
    """(submit to first token, decode tokens/s) through web + Redis + one warm worker + SSE."""
    started = time.perf_counter()
    answer = requests.post(stack.url + "/api/submit", headers=stack.headers, timeout=30,
                           json={"user_input": text, "max_tokens": max_tokens, "session_id": conversation, **GREEDY})
    received = list(events(f"{stack.url}/api/jobs/{answer.json()['job_id']}/events", stack.headers))
    batches = [e.at for e in received if e.event == "token"]  # the first token alone, then 50 ms batches
    tokens = received[-1].data["usage"]["completion_tokens"]
    return batches[0] - started, decode_rate(tokens, batches[0], batches[-1])


def measure(texts: list[str], max_tokens: int) -> tuple[list, list]:
    """Alternate direct and API runs prompt by prompt, so drift in the machine's speed hits both alike."""
    from llama_cpp import Llama

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        redis, socket = start_redis(folder)
        environ = {"LLAMALITH_INSTANCE": str(folder / "instance"), "REDIS_URL": f"unix://{socket}",
                   "SECRET_KEY": "bench", "LLM_MODELS": DEFAULT_MODEL_KEY, **MODEL_PATHS}
        settings = load_settings(environ)
        model = settings.models[DEFAULT_MODEL_KEY]
        params = settings.params_for(DEFAULT_MODEL_KEY, GREEDY)
        stack = Stack(environ, folder)
        llm = Llama(str(model.path), n_ctx=model.n_ctx, n_threads=os.cpu_count(), verbose=False)
        try:
            stack.start_web()
            stack.start_worker()
            direct, api = [], []
            for n, text in enumerate(["warm-up"] + texts):
                direct.append(direct_run(llm, text, max_tokens, params, model.system_prompt))
                api.append(api_run(stack, text, max_tokens, f"bench-{n}"))
            return direct[1:], api[1:]
        finally:
            llm.close()
            stack.stop()
            redis.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    texts = prompts(args.prompts)
    direct, api = measure(texts, args.max_tokens)
    direct_rate = statistics.median(rate for _, rate in direct)
    api_rate = statistics.median(rate for _, rate in api)
    overheads = [(api_ttft - direct_ttft) * 1000 for (direct_ttft, _), (api_ttft, _) in zip(direct, api)]
    print(f"model: {DEFAULT_MODEL_KEY}, prompts: {args.prompts}, max_tokens: {args.max_tokens}, cpus: {os.cpu_count()}")
    print(f"direct llama-cpp-python: decode {direct_rate:6.1f} tok/s, "
          f"first token {statistics.median(t for t, _ in direct) * 1000:6.1f} ms (medians)")
    print(f"through the API        : decode {api_rate:6.1f} tok/s, "
          f"first token {statistics.median(t for t, _ in api) * 1000:6.1f} ms (medians, from submit)")
    overhead = statistics.median(overheads)
    print(f"decode ratio (API / direct): {api_rate / direct_rate:.3f}")
    print(f"per-job overhead, median: {overhead:.1f} ms (min {min(overheads):.1f}, max {max(overheads):.1f})")
    summary("decode tok/s, API vs direct", api_rate, direct_rate, ">= 1.0")
    summary("per-job overhead (ms) vs direct first token", overhead, statistics.median(t for t, _ in direct) * 1000,
            "<= 15 ms", measured=overhead)


if __name__ == "__main__":
    main()
