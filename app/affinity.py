"""Conversation affinity: a conversation's next turn goes to the worker that ran its previous turn when that worker
is idle, because it holds the conversation's KV state (app/llm/state.py) and reads only the new tokens; otherwise
to the model's shared queue, where any worker of the model takes it. A turn never waits for a busy worker.

Each worker listens on its own queue before the shared ones and keeps a key that says it is idle: set when it
waits for work and just before a job's end is stored (a client sending the next turn as soon as it sees the end
finds it idle), deleted as it starts a job, refreshed with a TTL by its maintenance thread (which only extends the
key, never recreates it), so a dead worker stops being chosen within IDLE_TTL. A turn pushed to an idle worker's
queue is checked again after the push: if that worker became busy in between, either the enqueuer takes the turn
back out of the list and puts it in the shared queue, or the worker, starting its job, hands it over itself. Both
take it out of the list atomically, so exactly one of them moves it.

A live worker also says so, with the models it serves, in a key of its own that it sets again every few seconds
with a short TTL (`announce`): that key, not rq's registry, is what readiness, `/api/models` and `/metrics` count,
so a wiped Redis hears from every worker again within ANNOUNCE_INTERVAL and a killed one is forgotten within
ALIVE_TTL. Beside it, the same announcement says how many of each model's sequences (app/llm/engine.py) are in use.
"""

import time

from redis import Redis

IDLE_TTL = 15  # seconds; the maintenance thread refreshes it every few seconds
PREFIX = "llamalith:worker:"
ANNOUNCE_INTERVAL = 2  # seconds between a worker's announcements
ALIVE_TTL = 7  # seconds a worker counts as live after it last announced itself: a few announcements may be late
WORKERS = "llamalith:workers"  # every worker name announced lately, scored by when: where readers find the keys
FORGET = 3600  # seconds after which a silent worker's name leaves WORKERS
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


def _alive_key(worker: str) -> str:
    return f"{PREFIX}{worker}:alive"


def announce(redis: Redis, worker: str, models: list[str], sequences: dict[str, tuple[int, int]],
             running: dict[int, int] | None = None) -> None:
    """`sequences`: per loaded model, (sequences in use, sequences it has); `running`: the sequence each of its
    running jobs is decoded in."""
    now = time.time()
    with redis.pipeline() as pipe:
        pipe.set(_alive_key(worker), ",".join(models), ex=ALIVE_TTL)
        pipe.delete(_sequences_key(worker), _running_key(worker))
        if sequences:
            pipe.hset(_sequences_key(worker), mapping={model: f"{used}/{count}" for model, (used, count)
                                                       in sequences.items()})
            pipe.expire(_sequences_key(worker), ALIVE_TTL)
        if running:
            pipe.hset(_running_key(worker), mapping=running)
            pipe.expire(_running_key(worker), ALIVE_TTL)
        pipe.zadd(WORKERS, {worker: now})
        pipe.zremrangebyscore(WORKERS, "-inf", now - FORGET)
        pipe.execute()


def _sequences_key(worker: str) -> str:
    return f"{PREFIX}{worker}:sequences"


def _running_key(worker: str) -> str:
    return f"{PREFIX}{worker}:running"


def running_sequences(redis: Redis, workers: list[str]) -> dict[int, int]:
    """The sequence each running job of `workers` is decoded in, as last announced."""
    with redis.pipeline(transaction=False) as pipe:
        for name in workers:
            pipe.hgetall(_running_key(name))
        announced = pipe.execute()
    return {int(job): int(seq) for jobs in announced for job, seq in jobs.items()}


def sequences(redis: Redis, model: str) -> dict[str, tuple[int, int]]:
    """Each live worker that has `model` loaded: (its sequences in use, the sequences it has), as last announced."""
    names = list(live_workers(redis))
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hget(_sequences_key(name), model)
        announced = pipe.execute()
    return {name: tuple(int(n) for n in value.decode().split("/")) for name, value in zip(names, announced) if value}


def retire(redis: Redis, worker: str) -> None:
    """A worker stopping on purpose stops counting at once."""
    redis.delete(_alive_key(worker))


def last_announced(redis: Redis) -> dict[str, float]:
    """Each worker announced lately (live or not): when it last announced itself, as a Unix time."""
    return {name.decode(): at for name, at in redis.zrange(WORKERS, 0, -1, withscores=True)}


def live_workers(redis: Redis) -> dict[str, list[str]]:
    """Each live worker's name and the models it serves."""
    names = [name.decode() for name in redis.zrange(WORKERS, 0, -1)]
    served = redis.mget([_alive_key(name) for name in names]) if names else []
    return {name: models.decode().split(",") for name, models in zip(names, served) if models is not None}
