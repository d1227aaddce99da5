"""app/jobs/ and app/llm in-process: the real model and Redis, a burst worker, hand-made failures."""

from datetime import timedelta

from flask_migrate import upgrade
from rq import Queue
from rq.job import JobStatus as RQStatus

import worker
from app import create_app, jobs
from app.jobs import queues, reconciler, running
from app.keys import create_key
from app.extensions import db
from app.llm import ContextTooLong, ModelLoadError, Turn, fit_prompt
from app.llm.models import chat_formatter
from app.models import Job, JobKind, JobStatus, Message, utcnow
from config import load_settings
from tests.factories import MODEL, add_turn, add_user

import pytest


def test_unreadable_gguf_fails_once_is_not_retried_and_keeps_its_path_from_clients(environ, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf at all")
    app = create_app(load_settings({**environ, "LLM_MODELS": "broken", "BROKEN_PATH": str(broken)}))
    with app.app_context():
        upgrade()
        worker.prepare(app, ["broken"], name="test-worker")
        owner = add_user("owner")
        job = jobs.submit(owner.id, "c-1", "hello", "broken", None, {})
        worker.serve(app, ["broken"], burst=True)
        jobs.reconcile()
        db.session.expire_all()
        job = db.session.get(Job, job.id)
        assert (job.status, job.error_code, job.attempts) == ("error", "model_load_failed", 1)
        assert "could not be loaded" in job.error and str(tmp_path) not in job.error
        answer = app.test_client().post("/chat/api/submit", json={"user_input": "hi"},
                                        headers={"X-API-Key": create_key("k", owner.id)})
        assert answer.status_code == 503 and answer.json["error"]["code"] == "model_unavailable"
        assert str(tmp_path) not in answer.text
        db.engine.dispose()


def test_lost_worker_is_retried_with_backoff_then_given_up(app, owner):
    job = jobs.submit(owner.id, "c-2", "hello", MODEL, None, {})
    stale = utcnow() - timedelta(seconds=reconciler.HEARTBEAT_STALE + 1)
    for attempt in range(1, app.settings.max_attempts + 1):
        db.session.execute(db.update(Job).values(status="processing", attempts=attempt, heartbeat_at=stale,
                                                 worker="gone"))
        db.session.commit()
        jobs.reconcile()
        db.session.refresh(job)
        if attempt < app.settings.max_attempts:
            assert job.status == "queued" and job.retry_at > utcnow() + timedelta(seconds=2 ** attempt - 1)
    assert (job.status, job.error_code) == ("error", "worker_lost")


def test_duplicate_delivery_runs_once(owner, work):
    job = jobs.submit(owner.id, "c-3", "hello", MODEL, None, {})
    jobs.enqueue(job)  # the same job twice on the queue, as after a reconcile race
    work()
    db.session.refresh(job)
    assert job.status == "done" and job.attempts == 1
    assert db.session.scalar(db.select(db.func.count()).select_from(Message).where(Message.role == "assistant")) == 1


def test_a_job_redis_never_got_is_enqueued_by_the_reconciler(app, owner, work):
    app.redis.close()
    good_redis = app.redis
    app.redis = type(good_redis).from_url("redis://127.0.0.1:1")  # nothing listens there
    job = jobs.submit(owner.id, "c-4", "hello", MODEL, None, {})
    assert job.status == "queued"  # accepted although Redis was unreachable
    app.redis = good_redis
    assert jobs.reconcile()["enqueued"] == 1
    work()
    db.session.refresh(job)
    assert job.status == "done"


def test_a_job_a_worker_popped_is_enqueued_again_only_once_that_worker_is_gone(app, owner):
    job = jobs.submit(owner.id, "c-5", "hello", MODEL, None, {})
    queue = Queue(jobs.queue_name(MODEL, job.priority), connection=app.redis)
    rq_job = queue.fetch_job(jobs.rq_id(job.id))
    queue.remove(rq_job)  # popped by a worker, which is about to claim the row
    rq_job.set_status(RQStatus.STARTED)
    rq_job.started_at = utcnow()
    rq_job.save()
    assert jobs.reconcile()["enqueued"] == 0  # a duplicate would count as a turn waiting (app/worker_slots.py)
    rq_job.started_at = utcnow() - timedelta(seconds=queues.CLAIMING + 1)
    rq_job.save()  # that worker died before its claim
    assert jobs.reconcile()["enqueued"] == 1 and queue.get_job_ids() == [jobs.rq_id(job.id)]


def test_history_is_trimmed_oldest_first_and_the_system_prompt_kept(model_cache):
    model = model_cache.get(MODEL)
    history = [Turn(f"question {n} " + "filler " * 300, f"answer {n}") for n in range(12)]
    prompt = fit_prompt(model, "SYSTEM RULES", history, "the new question", max_tokens=512, safety_margin=64)
    text = model.llm.detokenize(prompt.tokens, special=True).decode()
    assert 0 < prompt.dropped_turns < 12
    assert "question 11" in text and "question 0 " not in text
    assert text.index("SYSTEM RULES") < text.index("question") and "the new question" in text
    assert len(prompt.tokens) <= model.settings.n_ctx - 512 - 64


def test_input_that_cannot_fit_is_refused(model_cache):
    with pytest.raises(ContextTooLong, match="max_tokens"):
        fit_prompt(model_cache.get(MODEL), None, [], "word " * 5000, max_tokens=64, safety_margin=64)


def test_a_job_that_waited_too_long_ends_without_running(app, owner, work):
    job = jobs.submit(owner.id, "c-5", "hello", MODEL, None, {})
    db.session.execute(db.update(Job).values(created_at=utcnow() - timedelta(seconds=app.settings.max_queue_wait + 1)))
    db.session.commit()
    work()
    db.session.refresh(job)
    assert (job.status, job.error_code, job.completion_tokens) == ("error", "timeout", None)
    assert "MAX_QUEUE_WAIT" in job.error


def test_a_gguf_without_a_chat_template_names_the_setting_that_fixes_it():
    class NoTemplate:  # what chat_formatter reads of a Llama whose GGUF has no template
        metadata: dict = {}

    with pytest.raises(ModelLoadError, match="MYTHOMAX_CHAT_FORMAT=chatml"):
        chat_formatter("mythomax", None, NoTemplate())


def test_a_regenerated_answer_replaces_the_old_one_in_the_next_turns_history(owner, work):
    old = add_turn("c-6", "Say hi.", JobStatus.DONE, "the old answer", result="the old answer")
    with pytest.raises(jobs.NotRegenerable):
        jobs.regenerate(jobs.submit(owner.id, "c-7", "unfinished", MODEL, None, {}))
    again = jobs.regenerate(old)
    assert (again.user_input, again.conversation_id, again.status) == ("Say hi.", "c-6", "queued")
    work()
    following = jobs.submit(owner.id, "c-6", "And now?", MODEL, None, {})
    history = running.history(following)
    assert [(turn.user, turn.job_id) for turn in history] == [("Say hi.", again.id)]
    assert history[0].assistant == db.session.get(Job, again.id).result != "the old answer"
    assert db.session.get(Job, old.id).result == "the old answer"  # the old job keeps what it wrote
    with pytest.raises(jobs.NotRegenerable):
        jobs.regenerate(db.session.get(Job, old.id))  # no longer the conversation's last answer


def test_an_embedding_in_the_conversation_is_not_in_a_chat_prompts_history(owner):
    """A client sending the same `user` to /v1/embeddings and /v1/chat/completions files both in one conversation;
    the chat shows the embedding's line, but the model is never given its inputs and summary as a turn."""
    add_turn("c-8", "Hello.", JobStatus.DONE, "Hi!", result="Hi!", user_id=owner.id)
    add_turn("c-8", '["a text to embed"]', JobStatus.DONE, "1 embedding of 576 dimensions", result="[[0.5]]",
             kind=JobKind.EMBEDDING.value, user_id=owner.id)
    following = jobs.submit(owner.id, "c-8", "And now?", MODEL, None, {})
    assert [(turn.user, turn.assistant) for turn in running.history(following)] == [("Hello.", "Hi!")]
