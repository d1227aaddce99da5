"""GET /metrics: Prometheus's text format, read from the database and Redis, so it counts every process."""

import json
import re
import time

import requests
from flask_migrate import upgrade
from prometheus_client.parser import text_string_to_metric_families

from app import create_app, request_counts
from config import ROOT, load_settings
from tests.stack import wait_for


def samples(stack) -> dict[tuple, float]:
    text = requests.get(stack.url + "/metrics", timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0)


def test_job_counters_and_histograms_move_when_a_job_runs(stack):
    stack.env["LLM_MODELS"] = model = "smollm2-135m"
    stack.start_web()
    stack.start_worker()
    before = samples(stack)
    for conversation in "aba":  # a's second turn follows b's, so it starts from a's kept KV state
        stack.wait_job(stack.submit(user_input=f"Name a word with the letter {conversation}.",
                                    session_id=conversation, max_tokens=8)["job_id"])
    after = samples(stack)
    assert value(after, "llamalith_jobs", model=model, status="done") == value(before, "llamalith_jobs", model=model,
                                                                            status="done") + 3
    for histogram in ("llamalith_job_duration_seconds", "llamalith_time_to_first_token_seconds"):
        assert value(after, f"{histogram}_count", model=model) == value(before, f"{histogram}_count", model=model) + 3
        assert value(after, f"{histogram}_sum", model=model) > value(before, f"{histogram}_sum", model=model)
        assert value(after, f"{histogram}_bucket", model=model, le="+Inf") == value(after, f"{histogram}_count",
                                                                                  model=model)
    assert value(after, "llamalith_completion_tokens_total", model=model) > 0
    assert value(after, "llamalith_prompt_tokens_total", model=model) > 0
    assert value(after, "llamalith_kv_restores_total", model=model) >= 1
    assert value(after, "llamalith_live_workers", model=model) == 1
    assert value(after, "llamalith_queue_depth", model=model, priority="batch") == 0
    # A scrape adds its own web process's counts at once; the other process's arrive within FLUSH_SECONDS.
    submits = {"method": "POST", "route": "/chat/api/submit", "status": "202"}
    wait_for(lambda: value(samples(stack), "llamalith_http_requests_total", **submits) == 3,
             timeout=request_counts.FLUSH_SECONDS + 2)


def test_metrics_token(environ):
    app = create_app(load_settings({**environ, "METRICS_TOKEN": "s3cret"}))
    with app.app_context():
        upgrade()
    client = app.test_client()
    assert client.get("/chat/metrics").status_code == 401
    assert client.get("/chat/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/chat/metrics", headers={"Authorization": "Basic s3cret"}).status_code == 401
    for scheme in ("Bearer", "bearer", "BEARER"):  # the scheme is case-insensitive (RFC 9110)
        answer = client.get("/chat/metrics", headers={"Authorization": f"{scheme} s3cret"})
        assert answer.status_code == 200 and "llamalith_jobs" in answer.text


def test_unknown_methods_and_paths_share_one_series_each(client):
    """Any client may invent method names and paths: they must not each add a series to every later scrape."""
    for number in range(30):
        client.open(f"/chat/nowhere-{number}", method=f"FOO{number}")
        client.open(f"/chat/api/jobs/x{number}", method="GET")
    client.open("/chat/healthz", method="BREW")
    found = {(sample.labels["method"], sample.labels["route"], sample.labels["status"]): sample.value
             for family in text_string_to_metric_families(client.get("/chat/metrics").text)
             if family.name == "llamalith_http_requests" for sample in family.samples}
    assert found[("other", "unmatched", "404")] == 30 and found[("GET", "unmatched", "404")] == 30
    assert found[("other", "unmatched", "405")] == 1
    assert {method for method, _, _ in found} <= {"GET", "other"}


def test_the_grafana_dashboard_asks_only_for_metrics_that_exist(client):
    """docs/grafana/llamalith.json is a dashboard for these metrics: a renamed metric must not leave it blank."""
    families = text_string_to_metric_families(client.get("/chat/metrics").text)
    exposed = {f"{family.name}{suffix}" for family in families for suffix in ("", "_total", "_bucket", "_count", "_sum")}
    dashboard = json.loads((ROOT / "docs" / "grafana" / "llamalith.json").read_text())
    asked = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"llamalith_[a-z_]+", target["expr"])}
    assert asked and asked <= exposed


def test_a_process_adds_its_request_counts_to_redis_within_a_second(app, client):
    """Every process's scrape reads the counts from Redis; each web process adds its own there once a second."""
    client.get("/chat/healthz")
    deadline = time.monotonic() + request_counts.FLUSH_SECONDS + 1
    while not app.redis.hget(request_counts.HTTP_KEY, "GET /chat/healthz 200"):
        assert time.monotonic() < deadline, "not counted in Redis"
        time.sleep(0.05)
