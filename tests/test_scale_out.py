"""The scale-out setup: PostgreSQL via DATABASE_URL and a networked Redis via REDIS_URL (the machine's own
services), two workers, the real model. Skipped where those services are not running."""

import pytest
from redis import Redis, RedisError

from tests.stack import Stack

REDIS = "redis://127.0.0.1:6379/15"


@pytest.fixture
def network_redis():
    try:
        Redis.from_url(REDIS).flushdb()
    except RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    yield REDIS
    Redis.from_url(REDIS).flushdb()


@pytest.mark.slow
def test_postgres_and_network_redis_with_two_workers(environ, tmp_path, postgres_url, network_redis):
    stack = Stack({**environ, "DATABASE_URL": postgres_url, "REDIS_URL": network_redis, "LLM_THREADS": "1"}, tmp_path)
    try:
        stack.start_web()
        stack.start_worker()
        stack.start_worker()
        ids = [stack.submit(user_input=f"Say {n}.", session_id=f"pg-{n % 3}", max_tokens=4)["job_id"] for n in range(9)]
        assert {stack.wait_job(job_id)["status"] for job_id in ids} == {"done"}
        for conversation in ("pg-0", "pg-1", "pg-2"):
            jobs = stack.get(f"/api/jobs?conversation_id={conversation}")["jobs"]
            assert [j["id"] for j in sorted(jobs, key=lambda j: j["started_at"])] == sorted(j["id"] for j in jobs)
        assert stack.get("/api/models")["models"][0]["workers"] == 2
    finally:
        stack.stop()
