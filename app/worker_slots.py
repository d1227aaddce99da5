"""The jobs one worker runs at once (continuous batching, app/llm/engine.py): which jobs hold its slots, at what
priority, and which batch line gives its place up to an interactive turn waiting for one.

A worker has as many slots as its models' largest `parallel`; each slot is an rq worker thread that takes one job
at a time (worker.py). When every slot is taken and interactive turns wait in Redis, the newest batch lines are
asked to give their places up: each goes back to the front of its queue and starts again later (its partial text
is dropped, as after a worker stop), and the slot it leaves takes the turn, interactive queues being read first.

Each slot waits for its next job on a Redis connection of its own, named after its worker, so that a stop can end
those waits at once (`wake`) instead of at their next timeout, a second later.
"""

import threading
import time
from dataclasses import dataclass, field

from redis import Redis, ResponseError

from app.llm.engine import Sequence
from app.models import Priority


@dataclass
class Held:
    priority: str
    since: float = field(default_factory=time.monotonic)
    yielding: bool = False  # asked to give its place up
    handed_back: bool = False  # went back to the queue: the slot pushes it to the front when rq is done with it
    sequence: Sequence | None = None  # what it decodes, once generation began


class WorkerSlots:
    def __init__(self, count: int):
        self.count = count
        self.held: dict[int, Held] = {}
        self.lock = threading.Lock()

    def take(self, job_id: int, priority: str) -> bool:
        """A slot starts `job_id`; True when that was the last free one."""
        with self.lock:
            self.held[job_id] = Held(priority)
            return len(self.held) >= self.count

    def decodes(self, job_id: int, sequence: Sequence) -> None:
        with self.lock:
            if (held := self.held.get(job_id)) is not None:  # None: run outside a slot (tests run jobs so)
                held.sequence = sequence

    def sequences(self) -> dict[int, int]:
        """The sequence each held job is decoded in (app/llm/engine.py: its seq id), once the engine took it."""
        with self.lock:
            return {job_id: held.sequence.seq_id for job_id, held in self.held.items()
                    if held.sequence is not None and held.sequence.seq_id >= 0}

    def hand_back(self, job_id: int) -> None:
        with self.lock:
            if (held := self.held.get(job_id)) is not None:
                held.handed_back = True

    def leave(self, job_id: int) -> bool:
        """The slot is free again; True when its job was handed back to the queue (`hand_back`)."""
        with self.lock:
            held = self.held.pop(job_id, None)
            return held is not None and held.handed_back

    @property
    def in_use(self) -> int:
        return len(self.held)

    def full_of_batch_work(self) -> bool:
        """Every slot is taken, and some by a batch line that has not been asked to yield yet."""
        with self.lock:
            return len(self.held) >= self.count and any(
                held.priority == Priority.BATCH.value and not held.yielding for held in self.held.values())

    def make_room(self, waiting: int) -> list[int]:
        """Ask the newest batch lines to yield, so that `waiting` interactive turns get a slot; the jobs asked."""
        with self.lock:
            wanted = waiting - sum(held.yielding for held in self.held.values())
            lines = sorted((held.since, job_id) for job_id, held in self.held.items()
                           if held.priority == Priority.BATCH.value and not held.yielding)
            asked = [job_id for _, job_id in reversed(lines)][: max(wanted, 0)]
            for job_id in asked:
                self.held[job_id].yielding = True
            return asked

    def must_yield(self, job_id: int) -> bool:
        held = self.held.get(job_id)
        return held is not None and held.yielding


def slot_redis(address: str, worker_name: str) -> Redis:
    """A slot's own Redis client, each of whose connections carries the name `wake` looks for; unnamed where Redis
    refuses CLIENT SETNAME (some managed ones), whose slots then see a stop at their next timeout."""
    named = Redis.from_url(address, health_check_interval=30, client_name=_client_name(worker_name))
    try:
        named.ping()
        return named
    except ResponseError:
        return Redis.from_url(address, health_check_interval=30)


def name_slot(connection: Redis) -> None:
    """rq names the connection it starts on after itself: the slot's own name goes back on it."""
    if name := connection.connection_pool.connection_kwargs.get("client_name"):
        connection.client_setname(name)


def _client_name(worker_name: str) -> str:
    return f"llamalith-slot:{worker_name}"


def wake(redis: Redis, worker_name: str) -> None:
    """End the worker's slots' waits for a job: CLIENT UNBLOCK makes a BLPOP return as if it had timed out, and the
    slot then sees the stop before it waits again."""
    name = _client_name(worker_name)
    for client in redis.client_list():  # where CLIENT is refused: a RedisError, which serve() passes over
        if client.get("name") == name:
            redis.client_unblock(client["id"])
