"""Continuous batching (app/llm/engine.py, app/worker_slots.py) through real processes and the real model: answers,
interleaving, priorities, crashes, cancels, memory and what the API and /metrics show while sequences run."""

import signal
import time

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from app.streams import stream_key
from tests.stack import wait_for

MODEL = "smollm2-135m"
LONG = 300  # max_tokens for a job that is still running when the test acts on it

# Eight prompts of different lengths, from a few tokens to about a hundred.
PROMPTS = [
    "Name a colour.",
    "What is the capital of France?",
    "Describe the sea in two sentences.",
    "Explain why the sky is blue, step by step, for a child who is curious about light and air.",
    "Write a short poem about mountains.",
    "List three fruits.",
    "Tell me about the history of bread: where it started, how it spread, and why it matters. " * 3,
    "What is 2 + 2?",
]


def serve(stack, model: str = MODEL, **env: str) -> None:
    """The stack's processes serve `model` only (a worker would load every offered model otherwise), with one
    llama.cpp thread: the two cores are shared with other runs, and two spinning threads on a busy core made a
    token take ten times longer now and then (measured: 3 answers in 1.6-2.2 s with one thread, 2.6-18 s with two)."""
    stack.env.update(LLM_MODELS=model, LLM_THREADS="1", **env)


def entries(stack, job_id: int) -> list[tuple[int, dict[str, str]]]:
    """The job's live token stream in Redis: (milliseconds of the Redis clock, fields) per entry."""
    redis = Redis.from_url(stack.env["REDIS_URL"])
    return [(int(entry_id.split(b"-")[0]), {k.decode(): v.decode() for k, v in fields.items()})
            for entry_id, fields in redis.xrange(stream_key(job_id))]


def token_times(stack, job_id: int) -> list[int]:
    return [at for at, fields in entries(stack, job_id) if "t" in fields]


def end_time(stack, job_id: int) -> int:
    """When the stream's end entry was written: the worker writes it just after committing the job's end, so a
    poll that has seen the job done may read the stream a moment before it."""
    wait_for(lambda: any("end" in fields for _, fields in entries(stack, job_id)), timeout=10)
    return next(at for at, fields in entries(stack, job_id) if "end" in fields)


def most_at_once(intervals: list[tuple[int, int]]) -> int:
    """The most intervals [start, end) that share a moment."""
    return max(sum(start <= moment < end for start, end in intervals) for moment, _ in intervals)


def assistant_messages(stack, job_id: int) -> int:
    return stack.query("SELECT count(*) FROM messages WHERE job_id = :id AND role = 'assistant'", id=job_id)[0][0]


def cancel(stack, job_id: int) -> requests.Response:
    return requests.post(f"{stack.url}/api/jobs/{job_id}/cancel", headers=stack.headers, timeout=10)


def stop(process) -> None:
    """A warm stop (SIGTERM): no job is running, so nothing goes back to the queue."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def submit_all(stack, prompts: list[str], prefix: str = "p", **body) -> list[int]:
    """Every prompt at once, each in a conversation of its own."""
    return [stack.submit(user_input=prompt, session_id=f"{prefix}-{n}", **body)["job_id"]
            for n, prompt in enumerate(prompts)]


def wait_all(stack, ids: list[int], timeout: float = 180) -> list[dict]:
    return [stack.wait_job(job_id, timeout=timeout) for job_id in ids]


def wait_processing(stack, ids: list[int], with_text: bool = True) -> None:
    for job_id in ids:
        stack.wait_job(job_id, until=lambda job: job["status"] == "processing" and (job["result"] or not with_text))


def answers(stack, worker_env: dict[str, str], **body) -> tuple[list[str], int]:
    """The eight prompts' greedy answers from a worker started with `worker_env`, all submitted at once, and the
    most of them whose tokens were streaming at the same moment; the worker is stopped after."""
    worker = stack.start_worker(env=worker_env)
    ids = submit_all(stack, PROMPTS, temperature=0, max_tokens=24, **body)
    jobs = wait_all(stack, ids)
    assert [job["status"] for job in jobs] == ["done"] * len(PROMPTS)
    stop(worker)
    streaming = [(token_times(stack, job_id)[0], end_time(stack, job_id)) for job_id in ids]
    return [job["result"] for job in jobs], most_at_once(streaming)


@pytest.mark.same_on_postgres  # what the model writes, not what the database stores
def test_greedy_answers_through_the_batch_equal_one_at_a_time_answers(stack):
    """One at a time: a worker with LLM_PARALLEL=1 (what a worker without batching answers), the eight jobs
    submitted together and so run one after another. Then the same eight through a worker with LLM_PARALLEL=4, four
    decoded at a time: with LLM_PARALLEL_EXACT=1 (each sequence its own cells, each prompt chunk read alone) at least
    seven of eight are the same token for token; with the default shared cells the agreement is printed, not asserted
    (interleaved cells and flash attention change the float rounding, and a near tie then goes the other way).
    KV_CACHE_MB=0 everywhere: nothing carries over.

    Measured on 2026-12-07 (Intel, AVX-512): exact 8/8 in three runs of three, shared 5-6/8. Before prompt chunks
    were read alone, exact was 6-7/8: llama.cpp split a step holding one sequence's next token and another's prompt
    chunk into pieces with as many tokens of each, so the chunk's first token was computed in a piece of one token,
    whose kernels (vec_dot, not llamafile's sgemm) round differently. Decoding steps, one token per sequence, compute
    as a worker with one sequence does for SmolLM2's Q4_1 and Q8_0 weights. Not for every model: Gemma 3 270M's
    repacked Q4_K kernels round a step of four tokens differently from a step of one, exact 3/8 (docs/batching.md).
    The assertion is the issue's 7 of 8: room for one flip on a CPU whose kernels round in a way not measured here."""
    serve(stack, KV_CACHE_MB="0")
    stack.start_web()
    one_at_a_time, most = answers(stack, {"LLM_PARALLEL": "1"}, prefix="one")
    assert most == 1
    exact, most = answers(stack, {"LLM_PARALLEL": "4", "LLM_PARALLEL_EXACT": "1"}, prefix="exact")
    assert most == 4  # really four at a time
    shared, most_shared = answers(stack, {"LLM_PARALLEL": "4"}, prefix="shared")
    same_exact = sum(a == b for a, b in zip(one_at_a_time, exact))
    same_shared = sum(a == b for a, b in zip(one_at_a_time, shared))
    print(f"exact cells: {same_exact}/8 the same; shared cells: {same_shared}/8 the same "
          f"(at most {most_shared} at once)")
    for prompt, alone, batched in zip(PROMPTS, one_at_a_time, exact):
        if alone != batched:
            print(f"exact differs for {prompt[:40]!r}:\n  {alone!r}\n  {batched!r}")
    assert same_exact >= 7


@pytest.mark.same_on_postgres
def test_two_jobs_submitted_together_both_stream_before_either_ends(stack):
    serve(stack)
    stack.start_web()
    stack.start_worker(env={"LLM_PARALLEL": "2"})
    first, second = submit_all(stack, ["Describe the sea.", "Describe a forest."], max_tokens=48)
    assert [job["status"] for job in wait_all(stack, [first, second])] == ["done", "done"]
    tokens = {job_id: token_times(stack, job_id) for job_id in (first, second)}
    ends = {job_id: end_time(stack, job_id) for job_id in (first, second)}
    assert max(times[0] for times in tokens.values()) < min(ends.values())
    for job_id, other in ((first, second), (second, first)):  # each has tokens while the other streams
        assert any(tokens[other][0] < at < tokens[other][-1] for at in tokens[job_id]), (tokens, ends)


@pytest.mark.same_on_postgres
def test_an_interactive_turn_takes_the_place_of_a_batch_line(stack):
    serve(stack, RECONCILE_INTERVAL="1")  # a line enqueued twice after giving its place up would show
    stack.start_web()
    stack.start_worker(env={"LLM_PARALLEL": "2"})
    stories = ["Write a very long story about a dragon.", "Write a very long story about a ship.",
               "Write a very long story about a city.", "Write a very long story about a tree."]
    lines = submit_all(stack, stories[:1], prefix="first", max_tokens=200)
    wait_processing(stack, lines)  # so that the second line is the newer of the two that run
    lines += submit_all(stack, stories[1:], prefix="line", max_tokens=200)
    wait_processing(stack, lines[:2])
    submitted = time.monotonic()
    turn = stack.submit(user_input="Name a colour.", session_id="urgent", priority="interactive",
                        max_tokens=8)["job_id"]
    assert stack.wait_job(turn)["status"] == "done"
    print(f"the turn waited {time.monotonic() - submitted:.2f} s in all")
    jobs = wait_all(stack, lines, timeout=240)
    assert [job["status"] for job in jobs] == ["done"] * 4
    first_token = token_times(stack, turn)[0]
    assert all(first_token < end_time(stack, line) for line in lines)
    logs = stack.log_text()
    gave_up = [line for line in lines if f"job {line} gives its place up" in logs]
    assert gave_up == [lines[1]], logs  # the newest of the two running lines
    yielded = gave_up[0]
    assert f"job {yielded} handed back to the queue: an interactive turn took its place" in logs
    job = stack.get(f"/api/jobs/{yielded}")
    assert job["status"] == "done" and job["attempts"] == 1  # the attempt cut short is not counted (hand_back)
    assert logs.count(f"llamalith job {yielded} (") == 2, logs  # rq took it twice: cut short, then whole
    assert assistant_messages(stack, yielded) == 1
    assert [fields for _, fields in entries(stack, yielded) if "reset" in fields] == [{"reset": "1"}]
    assert [fields["end"] for _, fields in entries(stack, yielded) if "end" in fields] == ["done"]


def test_killed_worker_with_four_jobs_in_flight_retries_each_once(stack):
    serve(stack, RECONCILE_INTERVAL="1", LLM_PARALLEL="4")
    stack.start_web()
    first = stack.start_worker()
    ids = submit_all(stack, [f"Write a long essay about river number {n}." for n in range(4)], max_tokens=120)
    wait_processing(stack, ids, with_text=False)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = time.monotonic()
    stack.start_worker()
    jobs = wait_all(stack, ids)
    print(f"all four done {time.monotonic() - killed:.1f} s after the kill")
    assert [(job["status"], job["attempts"]) for job in jobs] == [("done", 2)] * 4
    assert [assistant_messages(stack, job_id) for job_id in ids] == [1] * 4
    for job in jobs:
        assert stack.get(f"/api/status/{job['conversation_id']}")["response"] == job["result"]


@pytest.mark.same_on_postgres
def test_cancel_one_of_four_running_jobs(stack):
    serve(stack, LLM_PARALLEL="4")
    stack.start_web()
    stack.start_worker()
    ids = submit_all(stack, [f"Write a long story about the number {n}." for n in range(4)], max_tokens=150)
    wait_processing(stack, ids)
    answer = cancel(stack, ids[1])
    returned = time.monotonic()
    assert answer.status_code == 200
    job = stack.wait_job(ids[1], timeout=5)
    waited = time.monotonic() - returned
    print(f"cancel answered {answer.json()['status']!r}; cancelled {waited:.2f} s after it returned")
    assert job["status"] == "cancelled" and waited < 1
    assert job["result"] and job["usage"]["completion_tokens"] < 150
    others = wait_all(stack, [ids[0], *ids[2:]])
    assert [job["status"] for job in others] == ["done"] * 3
    assert [assistant_messages(stack, job_id) for job_id in ids] == [1, 1, 1, 1]  # the partial text is kept too


@pytest.mark.same_on_postgres
def test_four_sequences_cost_little_more_memory_than_one(stack):
    serve(stack)
    stack.start_web()
    rss = {}
    for parallel in ("1", "4"):
        worker = stack.start_worker(env={"LLM_PARALLEL": parallel})
        ids = submit_all(stack, PROMPTS[:4], prefix=f"m{parallel}", max_tokens=32)
        assert {job["status"] for job in wait_all(stack, ids)} == {"done"}
        rss[parallel] = psutil.Process(worker.pid).memory_info().rss
        stop(worker)
    print(f"worker RSS: LLM_PARALLEL=1 {rss['1'] / 2**20:.0f} MiB, LLM_PARALLEL=4 {rss['4'] / 2**20:.0f} MiB "
          f"({rss['4'] / rss['1']:.2f}x)")
    assert rss["4"] <= 1.3 * rss["1"]


def metric_samples(stack) -> dict[tuple, float]:
    text = requests.get(stack.url + "/metrics", timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sequences(stack) -> list[dict]:
    return next(model for model in stack.get("/api/models")["models"] if model["id"] == MODEL)["sequences"]


@pytest.mark.same_on_postgres
def test_api_models_and_metrics_show_the_sequences_in_use(stack):
    serve(stack)
    stack.start_web()
    stack.start_worker(env={"LLM_PARALLEL": "2"})
    wait_for(lambda: len(sequences(stack)) == 1, timeout=10)
    [idle] = sequences(stack)
    assert idle["in_use"] == 0 and idle["parallel"] == 2
    worker = idle["worker"]
    ids = submit_all(stack, ["Write a very long story about a dragon.", "Write a very long story about a ship."],
                     max_tokens=LONG)
    wait_processing(stack, ids)
    wait_for(lambda: sequences(stack) == [{"worker": worker, "in_use": 2, "parallel": 2}], timeout=10)
    labels = {"worker": worker, "model": MODEL}
    key = tuple(sorted(labels.items()))
    wait_for(lambda: metric_samples(stack).get(("llamalith_sequences_in_use", key)) == 2, timeout=10)
    assert metric_samples(stack)[("llamalith_sequences", key)] == 2
    assert {stack.get(f"/api/jobs/{job_id}")["status"] for job_id in ids} == {"processing"}
    for job_id in ids:
        assert cancel(stack, job_id).status_code == 200
    wait_for(lambda: sequences(stack) == [{"worker": worker, "in_use": 0, "parallel": 2}], timeout=10)
    wait_for(lambda: metric_samples(stack).get(("llamalith_sequences_in_use", key)) == 0, timeout=10)
