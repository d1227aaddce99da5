"""HTTP requests counted in memory and added to Redis once a second, where /metrics reads every process's counts
(app/metrics.py). A round trip to Redis per request was a sixth of a poll's time (docs/benchmarks.md)."""

import threading
from collections import Counter

from redis import Redis, RedisError

HTTP_KEY = "llamalith:metrics:http"  # hash: "method route status" -> requests
FLUSH_SECONDS = 1.0  # how long a web process keeps its request counts before adding them to Redis


class RequestCounts:
    """This process's HTTP requests not yet in Redis. The first request after a flush starts a timer, and the counts
    gathered until it fires go to Redis in one pipeline. Counts Redis refused are kept for the next flush; a
    process killed loses at most its last second (a graceful stop flushes, wsgi.py)."""

    def __init__(self, redis: Redis):
        self.redis = redis
        self._pending: Counter[str] = Counter()
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def add(self, field: str) -> None:
        with self._lock:
            self._pending[field] += 1
            if self._timer is None:
                self._timer = threading.Timer(FLUSH_SECONDS, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, Counter()
            if self._timer is not None:
                self._timer.cancel()  # a scrape's flush: the timer's would find nothing
                self._timer = None
        if not pending:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for field, count in pending.items():
                pipe.hincrby(HTTP_KEY, field, count)
            pipe.execute()
        except RedisError:
            with self._lock:
                self._pending.update(pending)  # counting must never fail a request: the next flush tries again
