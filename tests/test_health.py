"""GET /healthz and GET /readyz: no key; readiness says why it is not ready."""

import signal

import pytest
import requests
from flask_migrate import upgrade
from redis import Redis

from app import create_app
from config import load_settings
from tests.stack import wait_for


def readiness(stack) -> dict:
    return requests.get(stack.url + "/readyz", timeout=10).json()


@pytest.mark.same_on_postgres
def test_readyz_needs_a_live_worker_per_offered_model(stack):
    stack.env["LLM_MODELS"] = "smollm2-135m,gemma3-270m"
    stack.start_web()
    answer = requests.get(stack.url + "/readyz", timeout=10)
    assert answer.status_code == 503 and answer.json() == {"status": "unavailable", "problems": [
        "no live worker serves model 'smollm2-135m'", "no live worker serves model 'gemma3-270m'"]}
    stack.start_worker("--models", "smollm2-135m")
    # rq registers a worker just after it logs that it serves: wait for that, not for a time.
    wait_for(lambda: readiness(stack)["problems"] == ["no live worker serves model 'gemma3-270m'"])
    stack.start_worker("gemma3-270m")  # the older positional form
    wait_for(lambda: readiness(stack)["status"] == "ready")
    answer = requests.get(stack.url + "/readyz", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready", "workers": {"smollm2-135m": 1, "gemma3-270m": 1}}


def test_readyz_is_503_when_redis_is_down_and_healthz_still_answers(environ, tmp_path):
    app = create_app(load_settings({**environ, "REDIS_URL": f"unix://{tmp_path}/no-redis.sock"}))
    with app.app_context():
        upgrade()
    client = app.test_client()
    answer = client.get("/chat/readyz")
    assert answer.status_code == 503 and answer.json["problems"] == ["Redis cannot be reached"]
    assert client.get("/chat/healthz").json == {"status": "ok"}


@pytest.mark.same_on_postgres
def test_worker_counts_follow_a_flushed_redis_and_a_killed_worker(stack):
    """Workers announce themselves every few seconds: after FLUSHALL they are counted again at once (it took 6.5
    minutes), and a worker killed with -9 stops counting within a few seconds (it took ~7 minutes)."""
    stack.env.update(LLM_MODELS="smollm2-135m", LLM_THREADS="1")
    stack.start_web()
    stack.start_worker()
    doomed = stack.start_worker()
    wait_for(lambda: readiness(stack).get("workers") == {"smollm2-135m": 2})
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    wait_for(lambda: readiness(stack).get("workers") == {"smollm2-135m": 1}, timeout=15)
    Redis.from_url(stack.env["REDIS_URL"]).flushall()
    wait_for(lambda: requests.get(stack.url + "/readyz", timeout=10).status_code == 200, timeout=10)
    assert stack.get("/api/models")["models"][0]["workers"] == 1
    assert stack.wait_job(stack.submit(user_input="Still there?", max_tokens=2)["job_id"])["status"] == "done"
