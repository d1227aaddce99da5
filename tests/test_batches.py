"""Batches (OpenAI's Batch API on the queue): with the real `openai` package against real processes, a malformed
file failing whole with line numbers, keys taking turns in the batch queue, cancel, expiry, a worker killed
with -9 (and Redis wiped) in the middle of a batch, and a big file made into a batch while other users submit."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta

import openai
import pytest
import requests
from redis import Redis
from sqlalchemy import func, select

from app import batch_lines, batches, jobs
from app.extensions import db
from app.keys import create_key
from app.models import ApiKey, Batch, Conversation, Job, JobStatus, Message, StoredFile, utcnow
from config import ROOT
from tests.factories import MODEL, add_user
from tests.other_submits import OtherSubmits

QUESTIONS = {"capital": "What is the capital of France?", "colour": "What colour is the sky?",
             "count": "Count from one to three."}


def jsonl(requests: list[dict]) -> bytes:
    return "".join(json.dumps(request) + "\n" for request in requests).encode()


def line(custom_id: str, content: str, model: str = MODEL, **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 16,
                     "temperature": 0, **body}}


@pytest.fixture
def openai_client(stack) -> openai.OpenAI:
    stack.start_web()
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.headers["Authorization"].split()[-1],
                         max_retries=0, timeout=60)


def wait_until_ended(client: openai.OpenAI, batch_id: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout} s: {batch.request_counts}")


def sentences_batch(client: openai.OpenAI, prefix: str, count: int):
    """A running batch of `count` lines, each asking for a sentence (long enough to be cancelled or killed midway)."""
    uploaded = client.files.create(file=(f"{prefix}.jsonl", jsonl(
        [line(f"{prefix}{i}", f"Write a sentence about the number {i}.", max_tokens=24) for i in range(count)])),
        purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")


def wait_until_completed(client: openai.OpenAI, batch_id: str, lines: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while client.batches.retrieve(batch_id).request_counts.completed < lines and time.monotonic() < deadline:
        time.sleep(0.1)


def output_rows(client: openai.OpenAI, file_id: str) -> list[dict]:
    return [json.loads(row) for row in client.files.content(file_id).text.splitlines()]


# With the real openai package and real processes --------------------------------------------------------------


def test_the_openai_sdk_runs_a_batch_to_an_output_file_of_real_answers(openai_client, stack):
    client = openai_client
    stack.start_worker()
    uploaded = client.files.create(file=("questions.jsonl", jsonl(
        [line(custom_id, question) for custom_id, question in QUESTIONS.items()])), purpose="batch")
    assert (uploaded.purpose, uploaded.filename) == ("batch", "questions.jsonl")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"job": "nightly"})
    assert batch.status == "in_progress" and batch.request_counts.total == 3 and batch.metadata == {"job": "nightly"}

    ended = wait_until_ended(client, batch.id)
    assert ended.status == "completed" and ended.error_file_id is None
    assert (ended.request_counts.completed, ended.request_counts.failed) == (3, 0)
    assert ended.completed_at >= ended.in_progress_at >= ended.created_at
    rows = output_rows(client, ended.output_file_id)
    assert [row["custom_id"] for row in rows] == list(QUESTIONS)
    answers = {row["custom_id"]: row["response"]["body"]["choices"][0]["message"]["content"] for row in rows}
    assert "Paris" in answers["capital"] and all(answers.values())
    assert all(row["response"]["status_code"] == 200 and row["error"] is None for row in rows)
    assert batch.id in [each.id for each in client.batches.list()]
    assert {uploaded.id, ended.output_file_id} <= {each.id for each in client.files.list()}

    jobs = stack.get("/api/jobs")["jobs"]  # each line was a job, at batch priority, in its own conversation
    assert len(jobs) == 3 and {job["priority"] for job in jobs} == {"batch"}
    assert len({job["conversation_id"] for job in jobs}) == 3


def test_cancel_ends_the_lines_not_yet_run(openai_client, stack):
    client = openai_client
    uploaded = client.files.create(file=("five.jsonl", jsonl([line(f"n{i}", f"Say {i}.") for i in range(5)])),
                                   purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    cancelled = client.batches.cancel(batch.id)  # no worker yet: nothing has started
    assert cancelled.status == "cancelled" and cancelled.cancelled_at and cancelled.output_file_id is None
    assert (cancelled.request_counts.completed, cancelled.request_counts.failed) == (0, 5)
    errors = output_rows(client, cancelled.error_file_id)
    assert [row["custom_id"] for row in errors] == [f"n{i}" for i in range(5)]
    assert {row["error"]["code"] for row in errors} == {"batch_cancelled"}

    stack.start_worker()  # a worker now finds nothing of the batch to run
    time.sleep(2)
    assert stack.query("SELECT count(*) FROM jobs WHERE started_at IS NOT NULL") == [(0,)]
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_cancel_while_it_runs_keeps_the_answers_and_drops_the_rest(openai_client, stack):
    client = openai_client
    stack.start_worker()
    batch = sentences_batch(client, "m", 20)
    wait_until_completed(client, batch.id, 1)
    assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    ended = wait_until_ended(client, batch.id)
    assert ended.status == "cancelled"
    answered = output_rows(client, ended.output_file_id)
    dropped = [row for row in output_rows(client, ended.error_file_id) if row["error"]]
    assert 1 <= len(answered) < 20 and dropped and {row["error"]["code"] for row in dropped} == {"batch_cancelled"}
    assert ended.request_counts.completed == len(answered) and ended.request_counts.total == 20


def test_a_batch_survives_its_worker_killed_and_redis_wiped_answering_every_line_once(openai_client, stack):
    client = openai_client
    stack.env["RECONCILE_INTERVAL"] = "1"
    worker = stack.start_worker()
    batch = sentences_batch(client, "q", 6)
    wait_until_completed(client, batch.id, 2)
    os.kill(worker.pid, signal.SIGKILL)
    Redis.from_url(stack.env["REDIS_URL"]).flushall()
    stack.start_worker()

    ended = wait_until_ended(client, batch.id, timeout=300)
    assert ended.status == "completed" and ended.request_counts.completed == 6
    rows = output_rows(client, ended.output_file_id)
    assert sorted(row["custom_id"] for row in rows) == [f"q{i}" for i in range(6)]  # each line exactly once
    assert all(row["response"]["body"]["choices"][0]["message"]["content"] for row in rows)


def test_the_docs_example_runs_as_written(openai_client, stack):
    stack.start_worker()
    script = re.search(r"```python\n(import json, os, time.*?)```", (ROOT / "docs" / "batch.md").read_text(),
                       re.S).group(1).replace("http://127.0.0.1:8000/chat", stack.url)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                            env={"LLAMALITH_KEY": stack.headers["Authorization"].split()[-1], "PATH": "/usr/bin"})
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines() if line.startswith("review-")] == [
        "review-0", "review-1", "review-2"]


# In-process: checks, fairness, expiry ----------------------------------------------------------------------


def upload(client, headers, content: bytes, purpose: str = "batch"):
    return client.post("/chat/v1/files", headers=headers, content_type="multipart/form-data",
                       data={"purpose": purpose, "file": (io.BytesIO(content), "batch.jsonl")})


def start(client, headers, content: bytes) -> dict:
    uploaded = upload(client, headers, content)
    assert uploaded.status_code == 200, uploaded.text
    answer = client.post("/chat/v1/batches", headers=headers, json={
        "input_file_id": uploaded.json["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    assert answer.status_code == 200, answer.text
    return answer.json


def test_a_malformed_file_fails_the_batch_with_line_numbers_and_enqueues_nothing(client, api_headers):
    content = b"\n".join([
        json.dumps(line("a", "Hello")).encode(),
        json.dumps(line("b", "Hello")).encode(),
        b'{"custom_id": "c", "method": "POST", "url": ',  # line 3: not JSON
        json.dumps(line("a", "Hello again")).encode(),  # line 4: a's second time
        json.dumps(line("e", "Hello", model="gpt-17")).encode(),  # line 5: no such model
        json.dumps({**line("f", "Hello"), "url": "/v1/embeddings"}).encode(),  # line 6: another endpoint
        json.dumps(line("g", "Hello", temperature=float("nan"))).encode(),  # line 7: NaN, which is not JSON
    ])
    batch = start(client, api_headers, content)
    assert batch["status"] == "failed" and batch["failed_at"] and batch["request_counts"]["total"] == 0
    errors = {error["line"]: error for error in batch["errors"]["data"]}
    assert sorted(errors) == [3, 4, 5, 6, 7]
    assert errors[3]["code"] == errors[7]["code"] == "invalid_json"
    assert errors[4]["code"] == "duplicate_custom_id" and "'a'" in errors[4]["message"]
    assert errors[5]["code"] == "model_not_found" and "gpt-17" in errors[5]["message"]
    assert errors[6]["param"] == "url"
    assert db.session.scalar(select(func.count()).select_from(Job)) == 0


@pytest.mark.parametrize("body, param", [
    ({"endpoint": "/v1/embeddings"}, "endpoint"),
    ({"completion_window": "1h"}, "completion_window"),
    ({"input_file_id": "file-nope"}, "file_id"),
    ({"metadata": {"k": 1}}, "metadata"),
    ({"extra": True}, "extra"),
])
def test_a_bad_batch_request_is_a_400_or_404_naming_the_field(client, api_headers, body, param):
    uploaded = upload(client, api_headers, jsonl([line("a", "Hi")])).json
    answer = client.post("/chat/v1/batches", headers=api_headers, json={
        "input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h", **body})
    assert answer.status_code in (400, 404) and answer.json["error"]["param"] == param
    assert db.session.scalar(select(func.count()).select_from(Batch)) == 0


def test_files_are_listed_by_purpose_and_an_unknown_one_lists_none(client, api_headers):
    mine = upload(client, api_headers, b"{}\n").json

    def listed(purpose: str) -> list[str]:
        answer = client.get("/chat/v1/files", headers=api_headers, query_string={"purpose": purpose})
        return [file["id"] for file in answer.json["data"]]

    assert listed("batch") == [mine["id"]] and listed("batch_output") == []
    assert listed("fine-tune") == listed("batch\x00") == []  # PostgreSQL refuses a NUL: it never gets there


def test_uploads_are_checked_and_private(client, api_headers, app):
    assert upload(client, api_headers, b"x", purpose="fine-tune").json["error"]["param"] == "purpose"
    app.settings.batch_file_max_bytes = 1024
    assert upload(client, api_headers, b"x" * 2048).status_code == 413
    mine = upload(client, api_headers, b"{}\n").json
    stranger = {"Authorization": f"Bearer {create_key('stranger', add_user('bob', password=None).id)}"}
    assert client.get(f"/chat/v1/files/{mine['id']}", headers=stranger).status_code == 404
    assert client.get(f"/chat/v1/files/{mine['id']}/content", headers=api_headers).data == b"{}\n"
    assert client.delete(f"/chat/v1/files/{mine['id']}", headers=api_headers).json["deleted"] is True
    assert client.get(f"/chat/v1/files/{mine['id']}", headers=api_headers).status_code == 404


def test_keys_take_turns_so_a_small_batch_does_not_wait_for_a_big_one(client, api_headers, owner, work):
    other = {"Authorization": f"Bearer {create_key('other', add_user('carol', password=None).id)}"}
    big = start(client, api_headers, jsonl([line(f"big-{i}", f"Say {i}.", max_tokens=2) for i in range(50)]))
    small = start(client, other, jsonl([line(f"small-{i}", f"Say {i}.", max_tokens=2) for i in range(5)]))
    work()
    order = [batch_id for batch_id, in db.session.execute(
        select(Job.batch_id).where(Job.started_at.is_not(None)).order_by(Job.started_at, Job.id))]
    assert len(order) == 55
    last_small = max(index for index, batch_id in enumerate(order) if batch_id == small["id"])
    assert last_small < 15, order  # round-robin: the 5 small lines run among the first big ones, not after 50
    for batch in (big, small):
        assert client.get(f"/chat/v1/batches/{batch['id']}", headers=api_headers if batch is big else other
                          ).json["status"] == "completed"


def test_a_batch_past_its_window_expires_keeping_what_was_answered(client, api_headers):
    batch = start(client, api_headers, jsonl([line("late", "Hello")]))
    db.session.execute(Batch.__table__.update().values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert batches.expire_overdue() == 1
    expired = client.get(f"/chat/v1/batches/{batch['id']}", headers=api_headers).json
    assert expired["status"] == "expired" and expired["expired_at"]
    errors = client.get(f"/chat/v1/files/{expired['error_file_id']}/content", headers=api_headers).data
    assert json.loads(errors)["error"]["code"] == "batch_expired"
    assert db.session.scalar(select(Job.status)) == JobStatus.CANCELLED.value


def test_batches_are_listed_newest_first_in_pages(client, api_headers):
    made = [start(client, api_headers, jsonl([line("x", "Hi")]))["id"] for _ in range(3)]
    first = client.get("/chat/v1/batches?limit=2", headers=api_headers).json
    assert [batch["id"] for batch in first["data"]] == made[::-1][:2] and first["has_more"] is True
    rest = client.get(f"/chat/v1/batches?limit=2&after={first['last_id']}", headers=api_headers).json
    assert [batch["id"] for batch in rest["data"]] == [made[0]] and rest["has_more"] is False


# Big files -------------------------------------------------------------------------------------------------


def many_lines(count: int) -> bytes:
    return jsonl([line(f"n{i}", f"Say {i}.") for i in range(count)])


def test_a_big_batch_is_made_while_another_user_submits_without_waiting(stack):
    """10,000 lines (bench/big_files.py measures 50,000): checked, then stored a chunk at a time in short
    transactions, so another user's submits every 100 ms kept their p99 under a second (a single transaction held
    them for a minute)."""
    stack.start_web()
    other = stack.user("dora")
    uploaded = requests.post(stack.url + "/v1/files", headers=stack.headers, data={"purpose": "batch"},
                             files={"file": ("big.jsonl", many_lines(10_000))}, timeout=60).json()
    with OtherSubmits(stack.url, other) as submits:
        time.sleep(0.5)
        batch = requests.post(stack.url + "/v1/batches", headers=stack.headers, timeout=600, json={
            "input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}).json()
        time.sleep(0.5)
    assert batch["status"] == "in_progress" and batch["request_counts"]["total"] == 10_000, batch
    assert not submits.failures and len(submits.latencies) >= 20, submits.failures
    assert submits.p99 < 1.0, submits.summary()
    assert stack.query("SELECT count(*) FROM jobs j JOIN messages m ON m.job_id = j.id WHERE j.batch_id = :batch",
                       batch=batch["id"]) == [(10_000,)]
    assert stack.query("SELECT count(*) FROM jobs WHERE batch_id = :batch AND NOT held", batch=batch["id"]) == [(2,)]


def test_a_file_over_the_line_cap_is_refused_before_any_line_is_parsed(stack):
    """100,001 lines were parsed for two minutes before the cap refused them; now counted first."""
    stack.start_web()
    content = b"".join(b'{"custom_id": "n%d"}\n' % i for i in range(batches.MAX_LINES * 2 + 1))
    started = time.monotonic()
    answer = requests.post(stack.url + "/v1/files", headers=stack.headers, data={"purpose": "batch"},
                           files={"file": ("huge.jsonl", content)}, timeout=60)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "too_many_requests", answer.text
    assert time.monotonic() - started < 3
    assert stack.query("SELECT count(*) FROM files") == [(0,)]


def test_a_stored_file_over_the_cap_fails_its_batch_at_once(client, api_headers, owner):
    content = many_lines(batches.MAX_LINES + 1)  # uploaded before the cap was checked on upload
    db.session.add(StoredFile(id="file-old", user_id=owner.id, purpose="batch", filename="old.jsonl",
                              bytes=len(content), content=content))
    db.session.commit()
    started = time.monotonic()
    batch = client.post("/chat/v1/batches", headers=api_headers, json={
        "input_file_id": "file-old", "endpoint": "/v1/chat/completions", "completion_window": "24h"}).json
    assert time.monotonic() - started < 3
    assert batch["status"] == "failed" and batch["errors"]["data"][0]["code"] == "too_many_requests"
    assert db.session.scalar(select(func.count()).select_from(Job)) == 0


def test_a_batch_whose_making_was_cut_off_is_never_run_and_is_cleaned_up(client, api_headers, owner):
    """Its request died after storing some lines: they are held, no release takes them, and the reconciler
    removes them with their conversations and fails the batch."""
    key = db.session.scalar(select(ApiKey))
    batch = Batch(id="batch_cut", user_id=owner.id, api_key_id=key.id, input_file_id="file-x",
                  endpoint=batches.ENDPOINT, completion_window="24h", status="validating", created_at=utcnow(),
                  expires_at=utcnow() + timedelta(hours=24))
    db.session.add(batch)
    db.session.commit()
    lines, errors = batches.read_lines(many_lines(3), batch, key)
    batch_lines.add_lines(owner.id, [(line.job, line.session_id) for line in lines[:2]])
    assert not errors and jobs.release_lines(key.id) == 0  # held until the batch is in progress
    assert client.get("/chat/v1/batches/batch_cut", headers=api_headers).json["status"] == "validating"

    batches.maintain()  # not yet abandoned: left alone
    assert db.session.scalar(select(func.count()).select_from(Job)) == 2
    db.session.execute(Batch.__table__.update().values(created_at=utcnow() - batches.ABANDONED))
    db.session.commit()
    batches.maintain()
    cut = client.get("/chat/v1/batches/batch_cut", headers=api_headers).json
    assert cut["status"] == "failed" and cut["errors"]["data"][0]["code"] == "batch_not_stored"
    assert [db.session.scalar(select(func.count()).select_from(table)) for table in (Job, Message, Conversation)] \
        == [0, 0, 0]
