"""Live tokens in Redis: one bounded stream per job, plus a cancel flag the worker checks between tokens.

Redis is transport only: losing a stream loses the live view, never the answer, which the worker
writes to the database when the job ends.
"""

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from redis import Redis, RedisError

log = logging.getLogger(__name__)

TTL_AFTER_END = 3600  # seconds a finished job's stream stays readable for late SSE clients
CANCEL_TTL = 24 * 3600
RETRY_PAUSE, MAX_RETRY_PAUSE = 0.2, 5.0  # seconds the token writer waits after a Redis error: first, most
READ_RETRY_PAUSE = 0.5  # seconds a reader first waits after a Redis error
FLUSH_SECONDS = 0.05  # a running job's tokens reach Redis at most this often (its first token at once)


def stream_key(job_id: int) -> str:
    return f"llamalith:job:{job_id}:tokens"


def cancel_key(job_id: int) -> str:
    return f"llamalith:job:{job_id}:cancel"


class TokenWriter:
    """Appends a running job's tokens; each write also answers "was cancel requested?" in the same round trip.

    Tokens are written in batches, the first at once and then at most every FLUSH_SECONDS, each batch one stream
    entry: per token, the worker only appends to a list, and readers wake once per batch, not per token (on two
    cores, every wake-up of the web process and its clients is taken from llama.cpp's decode).

    After a Redis error, generation goes on: tokens wait in memory and Redis is tried again after a pause that
    grows with each failure, so once Redis is back the stream catches up and a cancel is seen again.
    """

    def __init__(self, redis: Redis, job_id: int, max_entries: int):
        self.redis, self.job_id, self.max_entries = redis, job_id, max_entries
        self.unsent: list[str] = []
        self.sent_at, self.cancelled = 0.0, False
        self.failures, self.retry_at = 0, 0.0

    def start(self, attempt: int) -> None:
        # A job run again (after a crash or a worker stop) starts from scratch; readers drop what they had
        # when they see `reset`.
        existing = self._send(lambda p: p.exists(stream_key(self.job_id)))
        if existing and existing[0]:
            self._send(lambda p: p.xadd(stream_key(self.job_id), {"reset": str(attempt)}))

    def append(self, text: str) -> bool:
        """Add a token (or nothing: "" only asks); True once a cancel has been requested."""
        if text:
            self.unsent.append(text)
        if time.monotonic() - self.sent_at >= FLUSH_SECONDS:
            self.flush()
        return self.cancelled

    def flush(self) -> None:
        """Write the waiting tokens now, and learn whether a cancel was requested."""
        replies = self._send(lambda p: self._write_unsent(p).exists(cancel_key(self.job_id)))
        if replies is not None:
            self.cancelled = bool(replies[-1])
        self.sent_at = time.monotonic()

    def _write_unsent(self, pipe):
        if self.unsent:
            pipe.xadd(stream_key(self.job_id), {"t": "".join(self.unsent)}, maxlen=self.max_entries,
                      approximate=True)
        return pipe

    def finish(self, status: str) -> None:
        key = stream_key(self.job_id)
        self.retry_at = 0.0  # the end is worth one more try
        self._send(lambda p: self._write_unsent(p).xadd(key, {"end": status}).expire(key, TTL_AFTER_END)
                   .delete(cancel_key(self.job_id)))

    def _send(self, build) -> list | None:
        if time.monotonic() < self.retry_at:
            return None
        try:
            pipe = self.redis.pipeline(transaction=False)
            build(pipe)
            replies = pipe.execute()
        except RedisError as exc:
            self.failures += 1
            self.retry_at = time.monotonic() + min(RETRY_PAUSE * 2 ** (self.failures - 1), MAX_RETRY_PAUSE)
            log.warning("job %s: live token stream unavailable (%s); generation continues", self.job_id, exc)
            return None
        self.failures = 0
        self.unsent.clear()  # every write sends what waited
        return replies


def read(redis: Redis, job_id: int, after: str = "0-0", block_ms: int | None = None) -> list[tuple[str, dict]]:
    """Stream entries after the id `after` as (id, fields) with str values; waits up to `block_ms` for new ones."""
    reply = redis.xread({stream_key(job_id): after}, block=block_ms)
    return _decoded(reply[0][1]) if reply else []


@dataclass
class Entry:
    """One stream entry as `follow` yields it: a token, a restart of the job, its end, or a quiet tick."""

    kind: str  # "token", "reset", "end" or "tick" (nothing happened for a while)
    value: str = ""  # the token's text, the new attempt, the final status
    id: str | None = None  # the stream entry id, for Last-Event-ID


def follow(redis: Redis, job_id: int, after: str, stop: threading.Event, tick_seconds: float) -> Iterator[Entry]:
    """A job's stream entries after `after`, as they come, with a tick whenever `tick_seconds` pass without one.
    After a Redis error it waits before trying again, longer each time: a Redis outage never makes it spin.
    Ends when `stop` is set; the caller ends it at the `end` entry (or when a tick shows the job has ended)."""
    cursor, quiet_since, backoff = after, time.monotonic(), 0.0
    while not stop.is_set():
        try:
            entries = read(redis, job_id, cursor, block_ms=1000)
            backoff = 0.0
        except RedisError:
            backoff = min(max(backoff * 2, READ_RETRY_PAUSE), MAX_RETRY_PAUSE)
            stop.wait(backoff)
            entries = []
        for entry_id, fields in entries:
            cursor, quiet_since = entry_id, time.monotonic()
            kind = next((name for name in ("t", "reset", "end") if name in fields), None)
            if kind:
                yield Entry("token" if kind == "t" else kind, fields[kind], entry_id)
        if time.monotonic() - quiet_since >= tick_seconds:
            yield Entry("tick")
            quiet_since = time.monotonic()


def partial_texts(redis: Redis, job_ids: list[int]) -> dict[int, str]:
    """The text generated so far by each job's current attempt, in one round trip ('' when a stream is gone)."""
    if not job_ids:
        return {}
    try:
        pipe = redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.xrange(stream_key(job_id))
        replies = pipe.execute()
    except RedisError:
        return dict.fromkeys(job_ids, "")
    return {job_id: _text_of(_decoded(entries)) for job_id, entries in zip(job_ids, replies)}


def _text_of(entries: list[tuple[str, dict]]) -> str:
    text: list[str] = []
    for _, fields in entries:
        if "reset" in fields:  # the job started again: what came before belongs to a lost attempt
            text.clear()
        text.append(fields.get("t", ""))
    return "".join(text)


def _decoded(entries: list) -> list[tuple[str, dict]]:
    return [(_text(entry_id), {_text(k): _text(v) for k, v in fields.items()}) for entry_id, fields in entries]


def request_cancel(redis: Redis, job_id: int) -> None:
    redis.set(cancel_key(job_id), "1", ex=CANCEL_TTL)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value
