"""Conversation affinity: a conversation's next turn goes to the worker that ran its previous turn when that worker
is idle, because it holds the conversation's KV state (app/llm/state.py) and reads only the new tokens; otherwise
to the model's shared queue, where any worker of the model takes it. A turn never waits for a busy worker.

Each worker listens on its own queue before the shared ones and keeps a key that says it is idle: set when it
waits for work, deleted as it starts a job, refreshed with a TTL by its maintenance thread (which only extends the
key, never recreates it), so a dead worker stops being chosen within IDLE_TTL. A turn pushed to an idle worker's
queue is checked again after the push: if that worker became busy in between, either the enqueuer takes the turn
back out of the list and puts it in the shared queue, or the worker, starting its job, hands it over itself. Both
take it out of the list atomically, so exactly one of them moves it.
"""

from redis import Redis

IDLE_TTL = 15  # seconds; the maintenance thread refreshes it every few seconds
PREFIX = "llamalith:worker:"
UNCLAIMED = 20  # seconds a turn may sit in a worker's queue before the reconciler gives it to the shared queue


def worker_queue(worker: str) -> str:
    return PREFIX + worker


def _idle_key(worker: str) -> str:
    return f"{PREFIX}{worker}:idle"


def mark_idle(redis: Redis, worker: str) -> None:
    redis.set(_idle_key(worker), "1", ex=IDLE_TTL)


def mark_busy(redis: Redis, worker: str) -> None:
    redis.delete(_idle_key(worker))


def stay_idle(redis: Redis, worker: str) -> None:
    """Extend the idle mark if there is one; a worker that has started a job meanwhile stays busy."""
    redis.expire(_idle_key(worker), IDLE_TTL)


def is_idle(redis: Redis, worker: str) -> bool:
    return bool(redis.exists(_idle_key(worker)))
