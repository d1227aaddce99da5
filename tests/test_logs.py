"""Request ids and structured logs (app/logs.py): in-process for the header, then real processes for the job and
the worker's log lines."""

import json
import re

import requests

from tests.stack import wait_for


def test_a_sent_request_id_comes_back_and_a_malformed_one_is_replaced(client):
    assert client.get("/chat/healthz", headers={"X-Request-ID": "n8n-run-42.a"}).headers["X-Request-ID"] == \
        "n8n-run-42.a"
    for bad in ("two words", "x" * 65, "<script>", ""):
        made = client.get("/chat/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)


def lines(stack) -> list[dict]:
    return [json.loads(line) for line in stack.log_text().splitlines() if line.startswith("{")]


def test_the_request_id_is_on_the_job_and_in_the_workers_lines_for_it_and_no_prompt_is_logged(stack):
    stack.env["LOG_FORMAT"] = "json"
    stack.start_web()
    stack.start_worker()
    secret = "Tell me about the purple-walrus-7731 please."
    answer = requests.post(stack.url + "/api/submit", json={"user_input": secret, "max_tokens": 8},
                           headers={**stack.headers, "X-Request-ID": "trace-abc-123"}, timeout=10)
    assert answer.headers["X-Request-ID"] == "trace-abc-123"
    job_id = answer.json()["job_id"]
    stack.wait_job(job_id)
    assert stack.query("SELECT request_id FROM jobs WHERE id = :id", id=job_id) == [("trace-abc-123",)]
    wait_for(lambda: any(f"job {job_id} ended" in line["message"] for line in lines(stack)))
    mine = [line for line in lines(stack) if line["request_id"] == "trace-abc-123"]
    assert {f"job {job_id} started", f"job {job_id} ended"} <= {" ".join(line["message"].split()[:3])
                                                               for line in mine}
    assert all(line["level"] and line["logger"] and line["time"] for line in lines(stack))
    assert "purple-walrus" not in stack.log_text()
