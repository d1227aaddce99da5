"""The job lifecycle under cancels, crashes, Redis loss, load, time limits and priorities: real processes,
the real model, the test Redis (or a private one where a test restarts it)."""

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from redis import Redis

from app import places, worker_slots
from config import ROOT
from tests.sse import events
from tests.stack import Stack, start_redis, wait_for, wait_for_line

LONG = 400  # max_tokens for a job that is still running when the test acts on it


def wait_for_text(stack, job_id):
    return stack.wait_job(job_id, until=lambda job: job["status"] == "processing" and job["result"])


def cancel(stack, job_id):
    return requests.post(f"{stack.url}/api/jobs/{job_id}/cancel", headers=stack.headers, timeout=10)


def assistant_messages(stack, job_id) -> int:
    return stack.query("SELECT count(*) FROM messages WHERE job_id = :id AND role = 'assistant'", id=job_id)[0][0]


def test_cancel_a_queued_job_it_never_runs(stack):
    stack.start_web()
    job_id = stack.submit(user_input="Never answered")["job_id"]
    answer = cancel(stack, job_id)
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    stack.start_worker()
    follow_up = stack.submit(user_input="Answered", session_id=answer.json()["conversation_id"])["job_id"]
    assert stack.wait_job(follow_up)["status"] == "done"
    job = stack.get(f"/api/jobs/{job_id}")
    assert job["status"] == "cancelled" and job["attempts"] == 0 and job["started_at"] is None
    assert assistant_messages(stack, job_id) == 0


def test_cancel_a_running_job_keeps_its_text(stack):
    stack.start_web()
    stack.start_worker()
    job_id = stack.submit(user_input="Tell a very long story.", max_tokens=LONG)["job_id"]
    wait_for_text(stack, job_id)
    answer = cancel(stack, job_id)
    assert answer.status_code == 200
    job = stack.wait_job(job_id)
    assert job["status"] == "cancelled" and job["result"]
    assert job["usage"]["completion_tokens"] < LONG
    stream = list(events(f"{stack.url}/api/jobs/{job_id}/events", stack.headers))
    assert stream[-1].event == "cancelled"
    assert "".join(e.data["text"] for e in stream if e.event == "token") == job["result"]
    again = cancel(stack, job_id)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


def test_cancel_unknown_job_is_404(client, api_headers):
    answer = client.post("/chat/api/jobs/12345/cancel", headers=api_headers)
    assert answer.status_code == 404 and answer.json["error"]["code"] == "not_found"


def test_killed_worker_job_is_retried_and_stored_once(stack):
    stack.env["RECONCILE_INTERVAL"] = "1"
    stack.start_web()
    first = stack.start_worker()
    job_id = stack.submit(user_input="Write a long essay about rivers.", max_tokens=120)["job_id"]
    wait_for_text(stack, job_id)
    first.send_signal(signal.SIGKILL)
    first.wait()
    stack.start_worker()
    job = stack.wait_job(job_id, timeout=120)
    assert job["status"] == "done" and job["attempts"] == 2
    assert assistant_messages(stack, job_id) == 1
    assert stack.get(f"/api/status/{job['conversation_id']}")["response"] == job["result"]


def test_sigterm_hands_the_running_job_back(stack):
    stack.start_web()
    first = stack.start_worker()
    job_id = stack.submit(user_input="Write a long essay about mountains.", max_tokens=120)["job_id"]
    wait_for_text(stack, job_id)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    assert stack.get(f"/api/jobs/{job_id}")["status"] == "queued"
    stack.start_worker()
    job = stack.wait_job(job_id, timeout=120)
    assert job["status"] == "done" and job["attempts"] == 1 and assistant_messages(stack, job_id) == 1


@pytest.mark.slow
def test_redis_wiped_and_restarted_loses_no_job(environ, tmp_path):
    (tmp_path / "private-redis").mkdir()
    redis_process, socket = start_redis(tmp_path / "private-redis")
    environ = {**environ, "REDIS_URL": f"unix://{socket}", "RECONCILE_INTERVAL": "1"}
    stack = Stack(environ, tmp_path)
    try:
        stack.start_web()
        stack.start_worker()
        ids = [stack.submit(user_input=f"Describe the number {n}.", max_tokens=24, session_id=f"wipe-{n % 3}")["job_id"]
               for n in range(8)]
        Redis(unix_socket_path=str(socket)).flushall()
        redis_process.terminate()
        redis_process.wait()
        time.sleep(1)
        redis_process, _ = start_redis(socket.parent)
        assert {stack.wait_job(job_id, timeout=180)["status"] for job_id in ids} == {"done"}
        for job_id in ids:
            assert assistant_messages(stack, job_id) == 1
        # The worker said Redis was away in a line a round, not a traceback per thread every half second.
        assert "webhook deliveries wait for Redis" in stack.log_text()
        assert "webhook delivery round failed" not in stack.log_text()
    finally:
        stack.stop()
        redis_process.terminate()


@pytest.mark.slow
def test_a_redis_that_refuses_client_commands_still_serves_and_stops_warm(environ, tmp_path):
    """Some managed Redis refuse CLIENT: rq then names no connection, and a worker's slots cannot be woken by name
    at a stop (app/worker_slots.py), so they see it at their next one-second timeout instead."""
    (tmp_path / "private-redis").mkdir()
    redis_process, socket = start_redis(tmp_path / "private-redis", "--rename-command", "CLIENT", "")
    stack = Stack({**environ, "REDIS_URL": f"unix://{socket}"}, tmp_path)
    try:
        stack.start_web()
        worker = stack.start_worker()
        job = stack.wait_job(stack.submit(user_input="Say hi.", max_tokens=8)["job_id"])
        assert job["status"] == "done" and job["result"]
        worker.terminate()
        assert worker.wait(timeout=30) == 0
    finally:
        stack.stop()
        redis_process.terminate()


def test_300_concurrent_submits_two_workers(stack):
    stack.env["LLM_THREADS"] = "1"  # two workers on two cores
    stack.start_web()
    stack.start_worker()
    stack.start_worker()
    submitted: list[tuple[int, str]] = []
    lock = threading.Lock()

    def client(thread: int) -> None:
        session = requests.Session()
        for n in range(10):
            conversation = f"load-{(thread + n) % 30}"
            answer = session.post(f"{stack.url}/api/submit", headers=stack.headers, timeout=60,
                                  json={"user_input": f"Say {thread}-{n}.", "session_id": conversation, "max_tokens": 2})
            assert answer.status_code == 202, answer.text
            with lock:
                submitted.append((answer.json()["job_id"], conversation))

    threads = [threading.Thread(target=client, args=(t,)) for t in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [job_id for job_id, _ in submitted]
    assert len(set(ids)) == 300
    wait_for(lambda: stack.query("SELECT count(*) FROM jobs WHERE status IN ('queued', 'processing')")[0][0] == 0,
             timeout=600)
    assert stack.query("SELECT status, count(*) FROM jobs GROUP BY status") == [("done", 300)]
    for conversation in {c for _, c in submitted}:
        started = [row[0] for row in stack.query(
            "SELECT id FROM jobs WHERE conversation_id = :id ORDER BY started_at, id", id=conversation)]
        assert started == sorted(started)
        turns = [row[0] for row in stack.query(
            "SELECT job_id FROM messages WHERE conversation_id = :id AND role = 'assistant' ORDER BY id",
            id=conversation)]
        assert turns == sorted(turns)
    assert "database is locked" not in stack.log_text()


def test_time_limit_ends_the_job_with_its_partial_text(stack):
    stack.env["JOB_TIMEOUT"] = "1"
    stack.start_web()
    stack.start_worker()
    job = stack.wait_job(stack.submit(user_input="Write a very long story.", max_tokens=LONG)["job_id"])
    assert job["status"] == "error" and job["error"]["code"] == "timeout" and job["result"]
    assert job["usage"]["completion_tokens"] < LONG


def test_interactive_job_submitted_last_starts_next(stack):
    stack.env["LLM_PARALLEL"] = "1"  # one slot: the order jobs start in is the queue's (tests/test_batching.py: many)
    stack.start_web()
    stack.start_worker()
    # Interactive itself: a running batch job would give its place up to the urgent one (docs/batching.md).
    busy = stack.submit(user_input="Write a long story.", max_tokens=60, session_id="busy",
                        priority="interactive")["job_id"]
    wait_for_text(stack, busy)
    batch = [stack.submit(user_input=f"Batch {n}.", session_id=f"batch-{n}", max_tokens=4)["job_id"] for n in range(10)]
    urgent = stack.submit(user_input="Urgent!", session_id="urgent", priority="interactive", max_tokens=4)["job_id"]
    assert stack.get(f"/api/jobs/{urgent}")["queue_position"] == 1
    assert stack.get(f"/api/jobs/{batch[0]}")["queue_position"] == 2
    for job_id in [busy, urgent, *batch]:
        stack.wait_job(job_id)
    order = [row[0] for row in stack.query("SELECT id FROM jobs ORDER BY started_at")]
    assert order[:3] == [busy, urgent, batch[0]]


def test_aged_batch_job_is_not_overtaken_forever(stack):
    stack.env.update(BATCH_AGING="2", RECONCILE_INTERVAL="1")
    stack.start_web()
    stack.start_worker()
    busy = stack.submit(user_input="Write a long story.", max_tokens=60, session_id="busy")["job_id"]
    wait_for_text(stack, busy)
    old_batch = stack.submit(user_input="Old batch job.", session_id="old", max_tokens=4)["job_id"]
    interactive = []
    for n in range(30):  # more interactive work than the worker can keep up with: without aging, the batch job runs last
        interactive.append(stack.submit(user_input="Again.", session_id=f"i-{n}", priority="interactive",
                                        max_tokens=16)["job_id"])
        time.sleep(0.2)
    for job_id in [old_batch, *interactive]:
        assert stack.wait_job(job_id, timeout=300)["status"] == "done"
    started = dict(stack.query("SELECT id, started_at FROM jobs"))
    overtaken_by = [job_id for job_id in interactive if started[job_id] < started[old_batch]]
    assert len(overtaken_by) < len(interactive), "every interactive job ran before the aged batch job"


def test_queue_position_counts_down(stack):
    stack.env["LLM_PARALLEL"] = "1"  # one slot: the three start one after another
    stack.start_web()
    ids = [stack.submit(user_input=f"Describe {n}.", session_id=f"q-{n}", max_tokens=24)["job_id"] for n in range(3)]
    assert [stack.get(f"/api/jobs/{job_id}")["queue_position"] for job_id in ids] == [1, 2, 3]
    models = stack.get("/api/models")["models"][0]
    assert models["queue_depth"] == 3 and models["workers"] == 0
    stack.start_worker()
    seen = []
    while (job := stack.get(f"/api/jobs/{ids[2]}"))["status"] == "queued":
        if not seen or seen[-1] != job["queue_position"]:
            seen.append(job["queue_position"])
        time.sleep(0.05)
    assert seen == sorted(seen, reverse=True) and seen[-1] == 1 and len(seen) >= 2
    assert stack.get("/api/models")["models"][0]["workers"] == 1


def test_a_long_queue_counts_down_too(stack):
    """Past LONG_QUEUE queued jobs, the jobs ahead in line a moment ago come from a snapshot of the line
    (app/places.py): a new job's place is exact at once, and jobs leaving the line show within about a second."""
    stack.start_web()
    with ThreadPoolExecutor(8) as pool:
        ids = sorted(pool.map(lambda n: stack.submit(user_input=f"Line {n}.", session_id=f"line-{n}")["job_id"],
                              range(places.LONG_QUEUE + 20)))
    assert [stack.get(f"/api/jobs/{job_id}")["queue_position"] for job_id in ids[::50]] == list(range(1, len(ids), 50))
    last = stack.submit(user_input="Last.", session_id="last")
    assert last["queue_position"] == len(ids) + 1
    for job_id in ids[:10]:
        assert cancel(stack, job_id).ok
    seen = {stack.wait_job(last["job_id"], timeout=5, until=lambda job: job["queue_position"] == len(ids) - 9)
            ["queue_position"]}
    seen |= {stack.get(f"/api/jobs/{job_id}")["queue_position"] for job_id in (ids[10], last["job_id"])}
    assert seen == {1, len(ids) - 9}


def test_web_sigterm_ends_in_flight_streams_cleanly_and_exits(stack):
    web = stack.start_web()
    stack.start_worker()
    job_id = stack.submit(user_input="Write a long story about ships.", max_tokens=120, temperature=0)["job_id"]
    received = []
    for event in events(f"{stack.url}/api/jobs/{job_id}/events", stack.headers):
        received.append(event)
        if len(received) == 3:
            web.send_signal(signal.SIGTERM)  # the stream must end cleanly, not with a reset connection
    assert len(received) >= 3 and received[-1].event == "token"
    assert web.wait(timeout=30) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(stack.url + "/healthz", timeout=5)
    stack.start_web()
    assert stack.wait_job(job_id, timeout=180)["status"] == "done"  # the job never depended on the web process


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie nobody has reaped yet."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_worker_ends_with_its_supervisor_killed_with_minus_9(stack):
    """A process manager's hard stop (or the OOM killer) kills the supervisor's process group; the worker, in a
    session of its own, used to live on as an orphan taking jobs."""
    log = stack.logs / "supervised.log"
    supervisor = subprocess.Popen([sys.executable, "worker.py", "--supervise"], env=stack.env, cwd=ROOT,
                                  stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    stack.processes.append(supervisor)  # stopped with the stack, whatever happens here: a stray worker takes jobs
    child = int(wait_for_line(log, r"worker \S+:(\d+) serving", timeout=60).group(1))
    try:
        assert child != supervisor.pid and not gone(child)
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()
        wait_for(lambda: gone(child), timeout=10)
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)


def test_a_stop_ends_the_waits_of_its_own_workers_slots_for_a_job_at_once(redis_url):
    """A slot waits for its next job in BLPOPs of a second, and sees a stop between them; a stop wakes the worker's
    slots instead (CLIENT UNBLOCK: their wait ends as if it had timed out), and no other worker's."""
    waited: dict[str, object] = {}

    def wait_for_a_job(worker_name: str) -> None:
        waited[worker_name] = worker_slots.slot_redis(redis_url, worker_name).blpop(["llamalith:nothing"], timeout=60)

    slots = {name: threading.Thread(target=wait_for_a_job, args=(name,), daemon=True) for name in ("a:1:1", "b:2:2")}
    for slot in slots.values():
        slot.start()
    redis = Redis.from_url(redis_url)
    wait_for(lambda: sum(client["cmd"] == "blpop" for client in redis.client_list()) == 2)
    worker_slots.wake(redis, "a:1:1")
    slots["a:1:1"].join(timeout=10)
    assert waited == {"a:1:1": None} and slots["b:2:2"].is_alive()
    worker_slots.wake(redis, "b:2:2")
    slots["b:2:2"].join(timeout=10)
    assert waited == {"a:1:1": None, "b:2:2": None}
