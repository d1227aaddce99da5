"""Live tokens over SSE, against real processes and the real model."""

from tests.sse import events


def test_tokens_then_done_and_they_add_up_to_the_result(stack):
    stack.start_web()
    stack.start_worker()
    job_id = stack.submit(user_input="Describe the sea.", max_tokens=24)["job_id"]
    received = list(events(f"{stack.url}/api/jobs/{job_id}/events", stack.headers))
    tokens = [e for e in received if e.event == "token"]
    assert len(tokens) > 3
    assert received[-1].event == "done" and [e.event for e in received].count("done") == 1
    final = stack.get(f"/api/jobs/{job_id}")
    assert "".join(e.data["text"] for e in tokens) == final["result"] == received[-1].data["result"]


def test_resume_with_last_event_id_gets_exactly_the_missing_tokens(stack):
    stack.start_web()
    stack.start_worker()
    # Long enough to outlast two of the worker's token writes (it writes pieces at most every 0.25 s).
    job_id = stack.submit(user_input="Describe a forest.", max_tokens=200, temperature=0)["job_id"]
    url = f"{stack.url}/api/jobs/{job_id}/events"
    first = []
    for event in events(url, stack.headers):
        first.append(event)
        if len(first) == 2:
            break  # the client drops mid-generation
    assert [event.event for event in first] == ["token", "token"]
    rest = list(events(url, stack.headers, last_event_id=first[-1].id))
    assert rest[-1].event == "done"
    text = "".join(e.data["text"] for e in first + rest if e.event == "token")
    assert text == stack.get(f"/api/jobs/{job_id}")["result"]
    assert [e.id for e in rest][0] > first[-1].id and not {e.id for e in first} & {e.id for e in rest}


def test_late_client_of_a_finished_job_gets_the_whole_text(stack):
    stack.start_web()
    stack.start_worker()
    job_id = stack.submit(user_input="Name a colour.")["job_id"]
    final = stack.wait_job(job_id)
    received = list(events(f"{stack.url}/api/jobs/{job_id}/events", stack.headers))
    assert "".join(e.data["text"] for e in received if e.event == "token") == final["result"]
    assert received[-1].event == "done"


def test_stream_headers_suit_proxies(stack):
    import requests

    stack.start_web()
    job_id = stack.submit(user_input="Hello")["job_id"]
    with requests.get(f"{stack.url}/api/jobs/{job_id}/events", headers=stack.headers, stream=True, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["X-Accel-Buffering"] == "no" and r.headers["Cache-Control"] == "no-cache"
        assert next(r.iter_lines(decode_unicode=True)).startswith(":")  # an initial comment flushes proxies


def test_bad_last_event_id_is_400(client, api_headers):
    job_id = client.post("/chat/api/submit", json={"user_input": "hi"}, headers=api_headers).json["job_id"]
    answer = client.get(f"/chat/api/jobs/{job_id}/events", headers={**api_headers, "Last-Event-ID": "nope"})
    assert answer.status_code == 400 and answer.json["error"]["code"] == "invalid_request"
