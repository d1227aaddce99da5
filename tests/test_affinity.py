"""Conversation affinity (app/affinity.py): a turn goes to the idle worker that ran its conversation's previous
turn, else to the shared queue; never to a busy or dead one. Routing in-process with the real Redis, then two real
worker processes with the real model."""

from rq import Queue

from app import affinity, jobs
from app.extensions import current
from app.models import JobStatus
from tests.factories import MODEL, add_turn


def waiting(queue: str) -> list[str]:
    return Queue(queue, connection=current().redis).get_job_ids()


SHARED = jobs.queue_name(MODEL, "batch")


def test_a_turn_goes_to_the_idle_worker_holding_its_conversation_else_to_the_shared_queue(app, owner):
    redis = current().redis
    add_turn("c-1", "first", JobStatus.DONE, "answer", worker="w1")
    affinity.mark_idle(redis, "w1")
    second = jobs.submit(owner.id, "c-1", "second", MODEL, None, {})
    assert waiting(affinity.worker_queue("w1")) == [jobs.rq_id(second.id)] and waiting(SHARED) == []

    add_turn("c-2", "first", JobStatus.DONE, "answer", worker="w2")  # w2 never said it is idle: busy or dead
    other = jobs.submit(owner.id, "c-2", "second", MODEL, None, {})
    assert waiting(SHARED) == [jobs.rq_id(other.id)]

    affinity.mark_busy(redis, "w1")  # w1 starts another job: what waits for it goes to the shared queue
    jobs.hand_over("w1")
    assert waiting(affinity.worker_queue("w1")) == [] and waiting(SHARED) == [jobs.rq_id(other.id),
                                                                              jobs.rq_id(second.id)]


def test_the_idle_mark_expires_and_a_refresh_never_revives_a_busy_worker(app):
    redis = current().redis
    affinity.mark_idle(redis, "w1")
    assert 0 < redis.ttl("llamalith:worker:w1:idle") <= affinity.IDLE_TTL
    affinity.mark_busy(redis, "w1")
    affinity.stay_idle(redis, "w1")
    assert not affinity.is_idle(redis, "w1")


def test_a_turn_left_in_a_dead_workers_queue_is_given_to_the_shared_queue(app, owner):
    add_turn("c-1", "first", JobStatus.DONE, "answer", worker="gone")
    affinity.mark_idle(current().redis, "gone")
    job = jobs.submit(owner.id, "c-1", "second", MODEL, None, {})
    affinity.mark_busy(current().redis, "gone")  # it died right after: its idle mark ran out
    jobs.reconcile()
    assert waiting(SHARED) == []  # a live worker takes its turns at once: no duplicate yet
    current().redis.hset(f"rq:job:{jobs.rq_id(job.id)}", "enqueued_at", "2000-01-01T00:00:00.000000Z")
    jobs.reconcile()
    assert waiting(SHARED) == [jobs.rq_id(job.id)]


def test_a_worker_says_it_is_idle_before_a_turns_end_is_stored(app, owner, work, monkeypatch):
    """A client that sends the next turn the moment it sees the last one end finds the worker holding the
    conversation's KV state idle. The mark used to come after rq's bookkeeping, and a turn sent in between went to
    the shared queue (CI saw it: the test below)."""
    from app.jobs import running
    from app.worker_slots import WorkerSlots

    app.worker_slots = WorkerSlots(1)  # its one slot taken: busy while the job runs
    idle_as_it_ended = []
    store = running.finish

    def finish(*args, **kwargs):
        idle_as_it_ended.append(affinity.is_idle(current().redis, current().worker_name))
        return store(*args, **kwargs)

    monkeypatch.setattr(running, "finish", finish)
    jobs.submit(owner.id, "c-1", "Say hi.", MODEL, None, {"max_tokens": 2})
    work()
    assert idle_as_it_ended == [True]


def worker_of(stack, job_id: int) -> str:
    return stack.query("SELECT worker FROM jobs WHERE id = :id", id=job_id)[0][0]


def test_two_workers_each_conversation_stays_on_its_worker_and_never_waits_for_a_busy_one(stack):
    stack.start_web()
    for _ in range(2):
        stack.start_worker(env={"LLM_THREADS": "1", "LLM_PARALLEL": "1"})  # busy: its one slot is taken
    conversations = {name: [] for name in ("a", "b")}
    for turn, name in enumerate("aababb"):
        conversations[name].append(stack.submit(user_input=f"Say {turn}.", session_id=name, max_tokens=4)["job_id"])
        stack.wait_job(conversations[name][-1])
    # Without affinity, two idle workers take turns (Redis serves the longest-waiting one first): a's first two
    # turns would run on different workers.
    holders = {name: {worker_of(stack, job_id) for job_id in ids} for name, ids in conversations.items()}
    assert all(len(workers) == 1 for workers in holders.values()), holders

    stack.wait_job(stack.submit(user_input="Say hi.", session_id="c", max_tokens=2)["job_id"])
    long = stack.submit(user_input="Write a long story about ships.", session_id="a", max_tokens=400)["job_id"]
    stack.wait_job(long, until=lambda job: job["status"] == "processing")
    # Conversation c's previous turn ran on the worker that is now busy with the long answer.
    stack.query("UPDATE jobs SET worker = :worker WHERE conversation_id IN "
                "(SELECT id FROM conversations WHERE session_id = 'c')", worker=worker_of(stack, long))
    quick = stack.wait_job(stack.submit(user_input="Say yes.", session_id="c", max_tokens=4)["job_id"])
    assert quick["status"] == "done" and worker_of(stack, quick["id"]) != worker_of(stack, long)
    assert quick["started_at"] < (stack.get(f"/api/jobs/{long}")["processed_at"] or "9"), "it waited for the busy one"
