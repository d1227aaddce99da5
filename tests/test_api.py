"""The JSON API through Flask's test client, with the real Redis, the real model and an in-process worker."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from app import places
from app.keys import create_key
from app.models import ApiKey, Batch, Job, JobStatus, Message, utcnow
from app.extensions import db
from tests.factories import MODEL, add_conversation, add_turn, recorded_statements


def submit(client, headers, **body):
    return client.post("/chat/api/submit", json=body, headers=headers)


def test_submit_poll_status_and_list(client, api_headers, work):
    answer = submit(client, api_headers, user_input="Say hello.", session_id="story-123")
    assert answer.status_code == 202
    job_id = answer.json["job_id"]
    assert answer.json["status"] == "queued" and answer.json["queue_position"] == 1

    work()

    job = client.get(f"/chat/api/jobs/{job_id}", headers=api_headers).json
    assert job["status"] == "done" and job["result"] and job["attempts"] == 1
    assert job["usage"]["prompt_tokens"] > 0 and job["usage"]["completion_tokens"] > 0
    status = client.get("/chat/api/status/story-123", headers=api_headers).json
    assert status["response"] == job["result"]
    listed = client.get("/chat/api/jobs?conversation_id=story-123", headers=api_headers).json["jobs"]
    assert [j["id"] for j in listed] == [job_id]


def test_status_is_the_latest_answer_also_after_one_whose_job_is_gone(client, api_headers, owner):
    """A message without a job (from before jobs, or imported) is older than every job's, on PostgreSQL too, where
    a NULL job id sorts the other way."""
    add_conversation("story-9", "Old days", user_id=owner.id)
    db.session.add(Message(conversation_id="story-9", role="assistant", content="From before jobs"))
    add_turn("story-9", "Again", JobStatus.DONE, "The latest answer", user_id=owner.id)
    assert client.get("/chat/api/status/story-9", headers=api_headers).json["response"] == "The latest answer"


def test_second_turn_sees_the_first_in_its_prompt(client, api_headers, work, prompts_seen):
    submit(client, api_headers, user_input="My name is Zorblax.", session_id="story-7", system_prompt="You are a pirate.")
    work()
    submit(client, api_headers, user_input="What is my name?", session_id="story-7")
    work()
    first_answer = db.session.scalar(db.select(Message.content).where(Message.role == "assistant"))
    assert "You are a pirate." in prompts_seen[0] and "My name is Zorblax." in prompts_seen[0]
    assert "My name is Zorblax." in prompts_seen[1] and first_answer in prompts_seen[1] and "What is my name?" in prompts_seen[1]
    assert prompts_seen[1].index("Zorblax") < prompts_seen[1].index("What is my name?")


def test_the_model_is_loaded_once_across_jobs(client, api_headers, work, model_cache):
    model_cache.get(MODEL)
    loads = model_cache.loads
    for n in range(3):
        submit(client, api_headers, user_input=f"Count to {n}.")
    work()
    assert model_cache.loads == loads
    assert {job.status for job in db.session.scalars(db.select(Job))} == {"done"}


@pytest.mark.parametrize("body, code", [
    ({}, "invalid_request"),
    ({"user_input": ""}, "invalid_request"),
    ({"user_input": "   "}, "invalid_request"),
    ({"user_input": 42}, "invalid_request"),
    ({"user_input": "hi", "max_tokens": "many"}, "invalid_request"),
    ({"user_input": "hi", "max_tokens": 0}, "invalid_request"),
    ({"user_input": "hi", "temperature": 9}, "invalid_request"),
    ({"user_input": "hi", "top_p": 0}, "invalid_request"),
    ({"user_input": "hi", "temprature": 0.5}, "invalid_request"),
    ({"user_input": "hi", "session_id": "has spaces"}, "invalid_request"),
    ({"user_input": "word " * 5000}, "context_length_exceeded"),
    ({"user_input": "hi", "max_tokens": 5000}, "context_length_exceeded"),
    ([1, 2], "invalid_json"),
])
def test_bad_submissions_get_a_clear_400(client, api_headers, body, code):
    answer = submit(client, api_headers, **body) if isinstance(body, dict) else \
        client.post("/chat/api/submit", json=body, headers=api_headers)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["code"] == code and answer.json["error"]["message"]
    assert db.session.scalar(db.select(db.func.count()).select_from(Job)) == 0


def test_an_unknown_model_is_404_model_not_found_as_on_v1(client, api_headers):
    answer = submit(client, api_headers, user_input="hi", model="nope")
    assert answer.status_code == 404 and answer.json["error"]["code"] == "model_not_found"
    assert db.session.scalar(db.select(db.func.count()).select_from(Job)) == 0


def test_body_that_is_not_json(client, api_headers):
    answer = client.post("/chat/api/submit", data="user_input=hi", headers=api_headers)
    assert answer.status_code == 400 and answer.json["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("path", ["/chat/api/submit", "/chat/v1/chat/completions"])
def test_a_body_with_a_constant_json_lacks_is_invalid_json(client, api_headers, path, constant):
    """Python's parser reads these; PostgreSQL's JSON columns (and other clients) do not."""
    body = '{"user_input": "hi", "messages": [{"role": "user", "content": "hi"}], "model": "%s", ' \
           '"metadata": {"a": %s}, "temperature": %s}' % (MODEL, constant, constant)
    answer = client.post(path, data=body, headers={**api_headers, "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json["error"]["code"] == "invalid_json"
    assert db.session.scalar(db.select(db.func.count()).select_from(Job)) == 0


@pytest.mark.parametrize("path", ["/chat/api/status/a%00", "/chat/api/conversations/a%00/export",
                                  "/chat/v1/files/file-%00", "/chat/v1/files/file-%00/content",
                                  "/chat/v1/batches/batch_%00", "/chat/v1/batches?after=batch_%00"])
def test_an_id_with_a_nul_names_nothing(client, api_headers, path):
    """A 404 as for any unknown id (PostgreSQL refuses a NUL in text: asked, it would make this a 400)."""
    assert client.get(path, headers=api_headers).status_code == 404


def test_body_over_the_size_limit(client, api_headers, app):
    answer = client.post("/chat/api/submit", data="x" * (app.config["MAX_CONTENT_LENGTH"] + 1), headers=api_headers,
                         content_type="application/json")
    assert answer.status_code == 413 and answer.json["error"]["code"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"},
                                     {"Authorization": "Basic abc"}])
def test_missing_or_wrong_key_is_401(client, headers):
    for path in ("/chat/api/models", "/chat/api/jobs/1", "/chat/api/jobs"):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 401 and answer.json["error"]["code"] == "unauthorized"


def test_x_api_key_header_works(client, api_headers):
    key = api_headers["Authorization"].removeprefix("Bearer ")
    assert client.get("/chat/api/models", headers={"X-API-Key": key}).status_code == 200


@pytest.mark.parametrize("path", ["/chat/api/jobs/999", "/chat/api/status/nope", "/chat/api/jobs/abc",
                                  "/chat/api/nothing-here"])
def test_unknown_ids_are_404(client, api_headers, path):
    answer = client.get(path, headers=api_headers)
    assert answer.status_code == 404 and answer.json["error"]["code"] == "not_found"


@pytest.mark.parametrize("query", ["status=weird", "limit=0", "limit=abc", "limit=5000"])
def test_bad_job_filters(client, api_headers, query):
    answer = client.get(f"/chat/api/jobs?{query}", headers=api_headers)
    assert answer.status_code == 400 and answer.json["error"]["code"] == "invalid_request"


def test_models_lists_both_bundled_models_with_descriptions_and_system_prompts(client, api_headers):
    models = client.get("/chat/api/models", headers=api_headers).json
    assert models["default"] == "smollm2-135m"
    smollm2, gemma = models["models"]
    assert (smollm2["id"], gemma["id"]) == ("smollm2-135m", "gemma3-270m")
    assert smollm2["system_prompt"] == "You are a helpful assistant. Answer briefly and accurately."
    assert "chat model" in smollm2["description"] and smollm2["params"]["temperature"] == 0.2
    assert gemma["system_prompt"] is None and "base model" in gemma["description"] and gemma["chat_format"] == "gemma"


@pytest.mark.parametrize("sent, recorded", [
    ({}, "You are a helpful assistant. Answer briefly and accurately."),
    ({"system_prompt": "Be a pirate."}, "Be a pirate."),
    ({"system_prompt": ""}, None),
    ({"model": "gemma3-270m"}, None),
])
def test_a_job_records_the_system_prompt_it_uses(client, api_headers, sent, recorded):
    job = submit(client, api_headers, user_input="hi", **sent).json
    assert job["system_prompt"] == recorded


def test_the_default_model_answers_a_question_through_its_chat_template(client, api_headers, work, prompts_seen):
    """What a newcomer asks first: SmolLM2 answers rather than echoing, and its prompt is ChatML from the GGUF."""
    question = "What is the capital of France?"
    job_id = submit(client, api_headers, user_input=question, max_tokens=24, temperature=0).json["job_id"]
    work()
    answer = client.get(f"/chat/api/jobs/{job_id}", headers=api_headers).json["result"]
    assert prompts_seen == ["<|im_start|>system\nYou are a helpful assistant. Answer briefly and accurately.<|im_end|>\n"
                       f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"]
    assert "Paris" in answer and question not in answer


def test_listing_many_jobs_takes_a_few_statements(client, api_headers):
    for n in range(30):
        submit(client, api_headers, user_input=f"Question {n}", session_id=f"c{n % 3}")
    with recorded_statements() as statements:
        jobs = client.get("/chat/api/jobs?limit=1000", headers=api_headers).json["jobs"]
    assert [job["queue_position"] for job in reversed(jobs)] == list(range(1, 31))
    assert len(statements) <= 5, statements  # the key, the jobs, their positions, the recent durations per model


def queue_every_kind(owner) -> None:
    """24 queued jobs of every kind: interactive, batch, batch that has aged, a batch's line (never ages), held lines
    of two keys, on two models, beside jobs that are not queued."""
    create_key("other", owner.id)  # a second key, whose held lines count only ahead of its own
    keys = [db.session.scalar(select(ApiKey.id).where(ApiKey.name == name)) for name in ("test", "other")]
    db.session.add(Batch(id="batch_1", user_id=owner.id, input_file_id="file-1", endpoint="/v1/chat/completions",
                         completion_window="24h", status="in_progress", expires_at=utcnow() + timedelta(days=1)))
    old = utcnow() - timedelta(hours=1)
    kinds = [dict(priority="interactive"), dict(), dict(created_at=old), dict(created_at=old, batch_id="batch_1"),
             dict(held=True, batch_id="batch_1", api_key_id=keys[0]), dict(held=True, api_key_id=keys[1]),
             dict(model="gemma3-270m"), dict(priority="interactive", created_at=old)]
    for n in range(24):
        add_turn(f"c{n % 5}", f"Question {n}", JobStatus.QUEUED, user_id=owner.id, **kinds[n * 5 % len(kinds)])
        if n % 7 == 0:
            add_turn(f"d{n}", "Answered", JobStatus.DONE, reply="yes", user_id=owner.id, priority="interactive")


def places_shown(client, api_headers) -> dict[int, tuple[int, int]]:
    """Each queued job's place as a listing shows it and as a poll of it does."""
    listed = client.get("/chat/api/jobs?status=queued&limit=1000", headers=api_headers).json["jobs"]
    return {job["id"]: (job["queue_position"],
                        client.get(f"/chat/api/jobs/{job['id']}", headers=api_headers).json["queue_position"])
            for job in listed}


def test_a_polled_job_has_the_place_a_listing_gives_it(client, api_headers, owner):
    """A poll counts a queued job's place with its rank known (app/places.py: place_in_line); a listing, the rule
    for many at once."""
    queue_every_kind(owner)
    shown = places_shown(client, api_headers)
    assert len(shown) == 24 and len({listed for listed, _ in shown.values()}) > 5
    assert all(listed == polled for listed, polled in shown.values()), shown


def take_snapshot_now(app) -> None:
    app.snapshots.latest = places.Snapshot()  # due at once: the next place asked for takes one


def test_a_long_queue_takes_its_places_from_a_snapshot_and_counts_only_what_is_newer(client, api_headers, owner,
                                                                                    app, monkeypatch):
    """Past LONG_QUEUE queued jobs, the jobs ahead that were in line a moment ago come from a snapshot of the line:
    the places are the same as counted in full, for the jobs queued after it too; a job that left the line since
    is still counted until the snapshot is due again (docs/api.md)."""
    queue_every_kind(owner)
    counted = places_shown(client, api_headers)
    monkeypatch.setattr(places, "LONG_QUEUE", 3)
    take_snapshot_now(app)
    assert places_shown(client, api_headers) == counted
    assert app.snapshots.latest.newest == max(counted)
    for n in range(3):  # after the snapshot: counted, not taken from it
        add_turn(f"e{n}", "Later", JobStatus.QUEUED, user_id=owner.id, priority=("interactive", "batch")[n % 2])
    later = places_shown(client, api_headers)
    assert app.snapshots.latest.newest == max(counted)
    first = min(later, key=lambda job_id: later[job_id][0])
    assert client.post(f"/chat/api/jobs/{first}/cancel", headers=api_headers).status_code == 200
    stale = places_shown(client, api_headers)
    assert stale == {job_id: shown for job_id, shown in later.items() if job_id != first}
    take_snapshot_now(app)
    monkeypatch.setattr(places, "LONG_QUEUE", 10**6)
    exact = places_shown(client, api_headers)
    take_snapshot_now(app)
    monkeypatch.setattr(places, "LONG_QUEUE", 3)
    assert places_shown(client, api_headers) == exact != stale
    assert all(exact[job_id] <= shown for job_id, shown in stale.items())


def test_healthz_needs_no_key(client):
    assert client.get("/chat/healthz").json == {"status": "ok"}


def test_a_key_over_its_rate_limit_gets_429(client, api_headers, app, runner):
    app.settings.api_rate_limit = 3
    for _ in range(3):
        assert client.get("/chat/api/models", headers=api_headers).status_code == 200
    answer = client.get("/chat/api/models", headers=api_headers)
    assert answer.status_code == 429 and answer.json["error"]["code"] == "rate_limited"
    assert 0 < int(answer.headers["Retry-After"]) <= 60
    other = runner.invoke(args=["keys", "create", "other", "--user", "owner"]).stdout.strip().splitlines()[-1]
    assert client.get("/chat/api/models", headers={"X-API-Key": other}).status_code == 200  # per key


def test_a_repeated_idempotency_key_returns_the_same_job_and_a_different_body_is_409(client, api_headers):
    headers = {**api_headers, "Idempotency-Key": "order-42"}
    first = submit(client, headers, user_input="Summarise order 42.")
    again = submit(client, headers, user_input="Summarise order 42.")
    assert (first.status_code, again.status_code) == (202, 200) and again.headers["Idempotent-Replayed"] == "true"
    assert again.json["job_id"] == first.json["job_id"]
    other = submit(client, headers, user_input="Summarise order 43.")
    assert other.status_code == 409 and other.json["error"]["code"] == "idempotency_key_reused"
    assert submit(client, {**api_headers, "Idempotency-Key": "order-43"}, user_input="Summarise order 43.").status_code == 202
    assert db.session.scalar(db.select(db.func.count()).select_from(Job)) == 2
    assert submit(client, {**api_headers, "Idempotency-Key": "bad key"}, user_input="x").status_code == 400


def test_the_job_json_carries_the_request_id_of_the_request_that_made_it(client, api_headers):
    made = submit(client, {**api_headers, "X-Request-ID": "n8n-run-42"}, user_input="Hello.")
    job_id = made.json["job_id"]
    assert made.json["request_id"] == "n8n-run-42"
    assert client.get(f"/chat/api/jobs/{job_id}", headers=api_headers).json["request_id"] == "n8n-run-42"
    assert client.get("/chat/api/jobs", headers=api_headers).json["jobs"][0]["request_id"] == "n8n-run-42"
    unnamed = submit(client, api_headers, user_input="Hello again.")
    assert unnamed.json["request_id"] == unnamed.headers["X-Request-ID"]  # the one the server made


def test_frequency_and_presence_penalties_are_job_params_within_openais_bounds(client, api_headers):
    made = submit(client, api_headers, user_input="Hello.", frequency_penalty=0.5, presence_penalty=-1.5)
    assert made.status_code == 202 and made.json["params"] == {"frequency_penalty": 0.5, "presence_penalty": -1.5}
    for name in ("frequency_penalty", "presence_penalty"):
        refused = submit(client, api_headers, user_input="Hello.", **{name: 2.5})
        assert refused.status_code == 400 and name in refused.json["error"]["message"]


def test_an_idempotency_key_is_free_again_after_24_hours(client, api_headers):
    from datetime import timedelta

    from app.models import utcnow

    headers = {**api_headers, "Idempotency-Key": "daily-report"}
    first = submit(client, headers, user_input="Report.").json["job_id"]
    db.session.execute(db.update(Job).values(created_at=utcnow() - timedelta(hours=25)))
    db.session.commit()
    assert submit(client, headers, user_input="Report.").json["job_id"] != first


def test_usage_counts_ended_jobs_and_their_tokens_per_key_and_day(client, api_headers, work, owner, runner):
    for n in range(2):
        submit(client, api_headers, user_input=f"Say {n}.", max_tokens=4)
    work()
    usage = client.get("/chat/api/usage", headers=api_headers).json
    jobs = db.session.scalars(db.select(Job)).all()
    assert usage["days"] == 30 and usage["usage"] == [{
        "key": "test", "day": jobs[0].processed_at.date().isoformat(), "jobs": 2,
        "prompt_tokens": sum(job.prompt_tokens for job in jobs),
        "completion_tokens": sum(job.completion_tokens for job in jobs)}]
    runner.invoke(args=["users", "create", "stranger", "--password-stdin"], input="a long password\n")
    stranger = runner.invoke(args=["keys", "create", "theirs", "--user", "stranger"]).stdout.strip().splitlines()[-1]
    assert client.get("/chat/api/usage", headers={"X-API-Key": stranger}).json["usage"] == []
    assert client.get("/chat/api/usage?days=0", headers=api_headers).status_code == 400
