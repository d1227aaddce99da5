"""Continuous batching (issue 20): what running several jobs at once in one worker buys, through the whole stack.

    .venv/bin/python bench/batching.py [--jobs 8] [--max-tokens 128] [--repeats 2] [--paragraphs 0,1,3,7] [--model KEY]

Real processes as the Procfile runs them (`python wsgi.py`, one `python worker.py`, an embedded Redis), the default
model, greedy answers (temperature 0, the model's other defaults: top_k 40, top_p 0.95, repeat_penalty 1.1), jobs
submitted with `POST /chat/api/submit` and read back from `GET /chat/api/jobs/N`: every time below is the
server's own (`created_at`, `started_at`, `processed_at`, `usage.first_token_ms`), so the client's polling adds
nothing. Prompts have four lengths (about 40 to 400 tokens, the model's default system prompt included), ask for
long answers (most run to `--max-tokens`), and each job's is new (a tag at its start), so no job starts from a
KV state another one left (app/llm/state.py). The worker is warmed up before anything is measured.

1. Aggregate tokens/s: `--jobs` jobs in waves of N submitted at once (N = 1, 2, 4, 8 in flight), on a worker with
   LLM_PARALLEL=4 (8 in flight: 4 running, 4 waiting); a wave lasts from its first job's start to its last job's
   end, and the figure is every completion token over the waves' summed time (prompt evaluation included). The
   baseline is one job at a time on a worker with LLM_PARALLEL=1, each submitted after the previous one ended:
   completion tokens over the jobs' summed start-to-end times, as a wave of one is timed (until 2026-12-06 it was
   their summed `duration_ms`, the worker's generation time alone, which left out each job's claim and end: the
   baseline looked about 15% faster than a wave of one job measured the same way). Target: 4 in flight >= 1.4x. The peer: llama.cpp's own
   `llama-server -np 4 -cb` (same GGUF, n_ctx, batch sizes, threads, unified KV cells, no flash attention) on the
   same prompt tokens (its `/completion` takes token ids), in waves of 4 concurrent requests timed by the client.
   Target: 4 in flight >= its aggregate. `bench/build_llama_server.sh` builds it (about 25 minutes on 2 cores;
   `LLAMA_SERVER=/path/to/llama-server` points at another); without one those rows are skipped.
2. Time to first token of 4 chat turns (interactive, new conversations) submitted at the same moment, from each
   job's `created_at` to its first token, p50 and max, with LLM_PARALLEL=4 against the same with LLM_PARALLEL=1,
   where they run one after another. Target: max <= 0.25x.
3. An interactive turn's time to first token while 8 batch jobs (`"priority": "batch"`, the API's default) hold the
   worker's 4 slots and its queue, against the same turn on the idle worker (LLM_PARALLEL=4). The newest batch
   line gives its place up (app/worker_slots.py). Target: <= 2x idle.
4. One job alone on the LLM_PARALLEL=4 worker: its decode tokens/s, (completion_tokens - 1) / (duration_ms -
   first_token_ms), against llama-cpp-python's `Llama.create_completion` on the same prompt tokens in this process
   (same settings as the worker's, streamed: (tokens - 1) / (last token - first token)), alternating prompt by
   prompt. Target: >= 0.97x.

Prints one SUMMARY row per figure (bench/summary.py); rows without a target in issue 20 say "-". Record results in
docs/benchmarks.md. Two cores: everything shares them, so run nothing else meanwhile if you can, and note the load.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from app.llm.models import DROPS_SYSTEM, LoadedModel, chat_formatter  # noqa: E402
from app.llm.prompt import build_messages  # noqa: E402
from bench.load import web_stack  # noqa: E402
from bench.summary import summary  # noqa: E402
from config import DEFAULT_MODEL_KEY, ROOT, load_settings  # noqa: E402
from tests.stack import MODEL_PATHS, Stack, free_port, wait_for  # noqa: E402

GREEDY = {"temperature": 0}
SLOTS = 4
BUILD_HINT = ("build it with `bench/build_llama_server.sh` (about 25 minutes on 2 cores; CMAKE_ARGS as the Makefile "
              "sets them), or point LLAMA_SERVER at a llama-server binary")
SUBJECTS = ["a lighthouse keeper", "a lost robot", "a river town", "a winter market", "an old library", "a desert "
            "caravan", "a mountain village", "a night train", "a clockmaker", "a small island", "a forest ranger",
            "a city bakery", "a sailing ship", "a moon base", "a quiet garden", "a travelling circus"]
NOTES = ("The morning was cold and the sky was the colour of slate. Nobody in the street had slept well. A letter "
         "had arrived the day before, written in a hand that nobody recognised, and it asked for help. ")
PARAGRAPHS = [0, 1, 3, 7]  # note paragraphs per prompt: about 40, 90, 190 and 390 prompt tokens


def text(n: int, tag: str, length: int | None = None) -> str:
    """Prompt `n` of its run, new everywhere thanks to `tag`: one of four lengths, asking for a long answer."""
    paragraphs = PARAGRAPHS[(n if length is None else length) % len(PARAGRAPHS)]
    notes = f"Here are my notes:\n{NOTES * paragraphs}\n" if paragraphs else ""
    return f"[{tag}-{n}] {notes}Write a long, detailed story about {SUBJECTS[n % len(SUBJECTS)]}."


def moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.removesuffix("Z"))


def seconds(start: str, end: str) -> float:
    return (moment(end) - moment(start)).total_seconds()


def first_token_ms(job: dict) -> float:
    """From the job's submission (its row's `created_at`) to its first token."""
    return seconds(job["created_at"], job["started_at"]) * 1000 + job["usage"]["first_token_ms"]


def decode_rate(tokens: int, elapsed: float) -> float:
    return (tokens - 1) / elapsed if tokens > 1 and elapsed > 0 else float("nan")


@dataclass
class Throughput:
    tokens: int
    seconds: float
    jobs: int

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    def __add__(self, other: "Throughput") -> "Throughput":
        return Throughput(self.tokens + other.tokens, self.seconds + other.seconds, self.jobs + other.jobs)

    def line(self, name: str) -> str:
        return (f"{name:<44}{self.rate:8.1f} tok/s  ({self.tokens} tokens, {self.jobs} jobs, "
                f"{self.seconds:.1f} s; {load()})")


class Client:
    """Submits to and reads from one stack; polls gently (one job at a time, 4 times a second): every figure
    comes from the server's timestamps, and the web process shares the two cores with the model."""

    def __init__(self, stack: Stack, max_tokens: int):
        self.stack, self.max_tokens = stack, max_tokens
        self.worker: subprocess.Popen | None = None  # the one running now: its end stops the run at once

    def submit(self, user_input: str, **fields) -> int:
        body = {"max_tokens": self.max_tokens, **GREEDY, **fields}
        return self.stack.submit(user_input=user_input, **body)["job_id"]

    def submit_all(self, texts: list[str], **fields) -> list[int]:
        """All at the same moment, one connection each."""
        with ThreadPoolExecutor(len(texts)) as pool:
            return list(pool.map(lambda item: self.submit(item, **fields), texts))

    def wait(self, job_ids: list[int], timeout: float = 600) -> list[dict]:
        done, deadline = [], time.monotonic() + timeout
        for job_id in job_ids:
            while (job := self.stack.get(f"/api/jobs/{job_id}"))["status"] in ("queued", "processing"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
                if self.worker is not None and self.worker.poll() is not None:
                    raise RuntimeError(f"the worker ended (exit code {self.worker.returncode}); its log is in "
                                       f"{self.stack.logs}:\n{self.stack.log_text()[-3000:]}")
                time.sleep(0.25)
            if job["status"] != "done":
                raise RuntimeError(f"job {job_id} ended {job['status']}: {job['error']}")
            done.append(job)
        return done

    def processing(self) -> list[dict]:
        return self.stack.get("/api/jobs?status=processing&limit=100")["jobs"]

    def wave(self, texts: list[str]) -> Throughput:
        """`texts` submitted at once: from the first job's start to the last job's end."""
        jobs = self.wait(self.submit_all(texts))
        span = (max(moment(job["processed_at"]) for job in jobs) - min(moment(job["started_at"]) for job in jobs))
        return Throughput(sum(job["usage"]["completion_tokens"] for job in jobs), span.total_seconds(), len(jobs))

    def one_at_a_time(self, texts: list[str]) -> Throughput:
        """Each job submitted after the previous one ended: waves of one, timed as every wave is."""
        total = Throughput(0, 0.0, 0)
        for item in texts:
            total += self.wave([item])
        return total

    def turns_at_once(self, texts: list[str]) -> list[dict]:
        """Chat turns (interactive, each a new conversation) submitted at the same moment, once they have ended."""
        with ThreadPoolExecutor(len(texts)) as pool:
            ids = list(pool.map(lambda item: self.submit(item, priority="interactive",
                                                         session_id=item.split("]")[0].strip("[")), texts))
        return self.wait(ids)


@contextmanager
def worker(stack: Stack, parallel: int, client: Client) -> Iterator[None]:
    """One worker with LLM_PARALLEL=`parallel`, warmed up on every prompt length (llama.cpp allocates its buffers on
    the first decode, and again for a larger batch)."""
    process = client.worker = stack.start_worker(env={"LLM_PARALLEL": str(parallel)})
    try:
        client.wait(client.submit_all([text(n, f"warm{parallel}") for n in range(len(PARAGRAPHS))], max_tokens=8))
        yield
    finally:
        client.worker = None
        process.terminate()
        process.wait(timeout=30)


def interactive_under_load(client: Client, tag: str, repeats: int, max_tokens: int) -> tuple[list, list]:
    """(idle, loaded) interactive turns, ended; loaded: while 8 batch jobs fill the worker's slots and its queue,
    every running one past its prompt (its partial answer shows)."""
    idle, loaded = [], []
    for r in range(repeats):
        idle += client.turns_at_once([text(r, f"{tag}-idle", length=1)])
    for r in range(repeats):
        lines = client.submit_all([text(n, f"{tag}-line{r}") for n in range(2 * SLOTS)],
                                  max_tokens=4 * max_tokens, priority="batch")
        wait_for(lambda: len(running := client.processing()) >= SLOTS and all(job["result"] for job in running),
                 timeout=120)
        loaded += client.turns_at_once([text(r, f"{tag}-busy", length=1)])
        for job_id in reversed(lines):  # the queued ones first, so that none starts
            requests.post(f"{client.stack.url}/api/jobs/{job_id}/cancel", headers=client.stack.headers, timeout=10)
        wait_for(lambda: not client.processing(), timeout=120)
    return idle, loaded


def breakdown(jobs: list[dict]) -> str:
    """Each job's first token from its submission: waiting for a slot + the worker's own time to first token."""
    return ", ".join(f"{first_token_ms(job):.0f} ({seconds(job['created_at'], job['started_at']) * 1000:.0f} + "
                     f"{job['usage']['first_token_ms']})" for job in jobs)


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def raw_decode(llm, tokens: list[int], params, max_tokens: int) -> tuple[float, int]:
    """(decode tokens/s, completion tokens) of llama-cpp-python's own create_completion, streamed; tokens counted as
    the worker counts `usage.completion_tokens`: the answer's text tokenized again."""
    stamps, pieces = [], []
    for chunk in llm.create_completion(tokens, max_tokens=max_tokens, temperature=0, top_p=params.top_p,
                                       top_k=params.top_k, repeat_penalty=params.repeat_penalty, stream=True):
        if piece := chunk["choices"][0]["text"]:
            stamps.append(time.perf_counter())
            pieces.append(piece)
    count = len(llm.tokenize("".join(pieces).encode(), add_bos=False))
    return decode_rate(count, stamps[-1] - stamps[0]), count


def job_decode(job: dict) -> float:
    usage = job["usage"]
    return decode_rate(usage["completion_tokens"], (usage["duration_ms"] - usage["first_token_ms"]) / 1000)


def find_llama_server() -> Path | None:
    """LLAMA_SERVER, else instance/bench/llama-server here or in the repository's main checkout."""
    if os.environ.get("LLAMA_SERVER"):
        return Path(os.environ["LLAMA_SERVER"])
    places = [ROOT]
    try:
        common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        places.append(Path(common).parent)
    except (OSError, subprocess.CalledProcessError):
        pass
    for place in places:
        binary = place / "instance" / "bench" / "llama-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    return None


@contextmanager
def llama_server(binary: Path, settings, key: str, slots: int, folder: Path) -> Iterator[str]:
    model = settings.models[key]
    # The chat template only matters to llama-server's chat routes (the benchmark sends token ids): as it needs them.
    template = ["--jinja"] if model.chat_format is None else ["--no-jinja", "--chat-template", model.chat_format]
    threads = str(settings.threads or os.cpu_count())
    port = free_port()
    log = open(folder / f"llama-server-{slots}.log", "w")
    process = subprocess.Popen(
        [str(binary), "-m", str(model.path), "-c", str(model.n_ctx), "-np", str(slots), "-cb", *template,
         "-t", threads, "-tb", threads, "-b", str(model.n_batch), "-ub", str(model.n_batch), "-fa", "off",
         "--kv-unified", "--no-webui", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(url + "/health", timeout=1).ok, timeout=120)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def server_wave(url: str, prompts: list[list[int]], params, max_tokens: int, count) -> Throughput:
    """Concurrent `/completion` requests, timed by the client; tokens counted as the worker counts them."""
    body = {"n_predict": max_tokens, "temperature": 0, "top_k": params.top_k, "top_p": params.top_p,
            "repeat_penalty": params.repeat_penalty, "repeat_last_n": 64, "cache_prompt": True}

    def one(tokens: list[int]) -> int:
        answer = requests.post(url + "/completion", json={**body, "prompt": tokens}, timeout=600)
        answer.raise_for_status()
        return count(answer.json()["content"])

    started = time.perf_counter()
    with ThreadPoolExecutor(len(prompts)) as pool:
        tokens = sum(pool.map(one, prompts))
    return Throughput(tokens, time.perf_counter() - started, len(prompts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="jobs per throughput figure (a multiple of 8)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the first-token figures")
    parser.add_argument("--paragraphs", default=",".join(map(str, PARAGRAPHS)),
                        help="note paragraphs per prompt, in turn (0: about 40 prompt tokens, decode-bound)")
    parser.add_argument("--model", default=DEFAULT_MODEL_KEY, help="a bundled model's key (issue 20's targets are "
                        "for the default one)")
    args = parser.parse_args()
    PARAGRAPHS[:] = [int(n) for n in args.paragraphs.split(",")]
    from llama_cpp import Llama

    key = args.model
    settings = load_settings({**MODEL_PATHS, "SECRET_KEY": "bench", "LLM_MODELS": key})
    model_settings = settings.models[key]
    params = settings.params_for(key, {**GREEDY, "max_tokens": args.max_tokens})
    threads = settings.threads or os.cpu_count()
    llm = Llama(str(model_settings.path), n_ctx=model_settings.n_ctx, n_batch=model_settings.n_batch,
                n_threads=threads, n_threads_batch=threads, verbose=False)  # as app/llm/models.py loads it
    tokenizer = LoadedModel(key, model_settings, llm, chat_formatter(key, model_settings.chat_format, llm),
                            folds_system=model_settings.chat_format in DROPS_SYSTEM)

    def tokens_of(item: str) -> list[int]:
        """The prompt the worker builds for a job with no system prompt given (the model's own) and no history."""
        return tokenizer.tokenize(build_messages(model_settings.system_prompt, [], item, tokenizer.folds_system))

    def count(answer: str) -> int:
        return len(llm.tokenize(answer.encode(), add_bos=False))

    jobs = args.jobs
    lengths = sorted({len(tokens_of(text(n, "x"))) for n in range(len(PARAGRAPHS))})
    print(f"model {key}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at the start; "
          f"prompts of {', '.join(map(str, lengths))} tokens; max_tokens {args.max_tokens}; {jobs} jobs per figure",
          flush=True)
    flights: dict[int, Throughput] = {}
    with web_stack(LLM_MODELS=key) as stack:
        client = Client(stack, args.max_tokens)
        with worker(stack, 1, client):
            single = client.one_at_a_time([text(n, "one") for n in range(jobs)])
            print(single.line("one at a time, LLM_PARALLEL=1 (baseline)"), flush=True)
            turns_one = [client.turns_at_once([text(n, f"turn1-{r}", length=1) for n in range(SLOTS)])
                         for r in range(args.repeats)]
            print(f"4 turns at once, LLM_PARALLEL=1, first token ms (wait + worker): "
                  f"{'; '.join(breakdown(jobs) for jobs in turns_one)}; {load()}", flush=True)
        with worker(stack, SLOTS, client):
            for flight in (1, 2, 4, 8):
                texts = [text(n, f"flight{flight}") for n in range(jobs)]
                flights[flight] = sum((client.wave(texts[i:i + flight]) for i in range(0, jobs, flight)),
                                      Throughput(0, 0.0, 0))
                print(flights[flight].line(f"{flight} in flight, LLM_PARALLEL={SLOTS}"), flush=True)
            turns_four = [client.turns_at_once([text(n, f"turn4-{r}", length=1) for n in range(SLOTS)])
                          for r in range(args.repeats)]
            print(f"4 turns at once, LLM_PARALLEL={SLOTS}, first token ms (wait + worker): "
                  f"{'; '.join(breakdown(jobs) for jobs in turns_four)}; {load()}", flush=True)
            idle, loaded = interactive_under_load(client, "inter", args.repeats + 1, args.max_tokens)
            print(f"interactive turn, first token ms (wait + worker): idle {breakdown(idle)}; under 8 batch "
                  f"lines {breakdown(loaded)}; {load()}", flush=True)
            raw_rates, stack_rates = [], []
            for n in range(max(4, args.repeats * 2)):
                item = text(n, "solo")
                rate, raw_count = raw_decode(llm, tokens_of(item), params, args.max_tokens)
                job = client.wait([client.submit(item)])[0]
                if job["usage"]["prompt_tokens"] != len(tokens_of(item)):
                    print(f"  note: the worker's prompt has {job['usage']['prompt_tokens']} tokens, "
                          f"ours {len(tokens_of(item))}")
                raw_rates.append(rate)
                stack_rates.append(job_decode(job))
                print(f"  alone: raw {rate:6.1f} tok/s ({raw_count} tokens), through the stack "
                      f"{stack_rates[-1]:6.1f} tok/s ({job['usage']['completion_tokens']} tokens); {load()}",
                      flush=True)
        peer: dict[int, Throughput] = {}
        binary = find_llama_server()
        if binary is None:
            print(f"llama-server rows skipped: no binary; {BUILD_HINT}")
        else:
            prompts = [tokens_of(text(n, "flight4")) for n in range(jobs)]
            for slots in (1, SLOTS):
                with llama_server(binary, settings, key, slots, stack.logs) as url:
                    server_wave(url, [prompts[0][:32]] * slots, params, 8, count)  # warm-up
                    peer[slots] = sum((server_wave(url, prompts[i:i + slots], params, args.max_tokens, count)
                                       for i in range(0, jobs, slots)), Throughput(0, 0.0, 0))
                print(peer[slots].line(f"llama-server -np {slots} -cb, waves of {slots}"), flush=True)
    llm.close()

    turns_one, turns_four = ([[first_token_ms(job) for job in jobs] for jobs in rounds]
                             for rounds in (turns_one, turns_four))
    one_max, four_max = (statistics.median(max(r) for r in rounds) for rounds in (turns_one, turns_four))
    one_p50, four_p50 = (statistics.median([t for r in rounds for t in r]) for rounds in (turns_one, turns_four))
    print(f"4 turns at once, first token: LLM_PARALLEL=1 p50 {one_p50:.0f} ms max {one_max:.0f} ms; "
          f"LLM_PARALLEL={SLOTS} p50 {four_p50:.0f} ms max {four_max:.0f} ms (max: median over {args.repeats} rounds)")
    print(f"load average {os.getloadavg()[0]:.1f} at the end", flush=True)
    for flight in (1, 2):
        summary(f"aggregate tok/s, {flight} in flight vs one at a time", flights[flight].rate, single.rate, "-")
    summary("aggregate tok/s, 4 in flight vs one at a time", flights[4].rate, single.rate, ">= 1.4")
    summary("aggregate tok/s, 8 in flight vs one at a time", flights[8].rate, single.rate, "-")
    if SLOTS in peer:
        summary(f"aggregate tok/s, 4 in flight vs llama-server -np {SLOTS}", flights[4].rate, peer[SLOTS].rate,
                ">= 1.0")
        summary("llama-server -np 4 vs its -np 1 (for scale)", peer[SLOTS].rate, peer[1].rate, "-")
    summary("4 turns at once, first token max (ms) vs one slot", four_max, one_max, "<= 0.25")
    summary("4 turns at once, first token p50 (ms) vs one slot", four_p50, one_p50, "-")
    summary("interactive first token (ms) under 8 batch lines vs idle",
            statistics.median(map(first_token_ms, loaded)), statistics.median(map(first_token_ms, idle)), "<= 2.0")
    summary("one job alone, decode tok/s vs raw llama-cpp-python", statistics.median(stack_rates),
            statistics.median(raw_rates), ">= 0.97")


if __name__ == "__main__":
    main()
