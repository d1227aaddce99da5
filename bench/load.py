"""Shared by the web-tier benchmarks (bench/api_load.py, bench/streams.py): a web process to load, and a closed-loop
HTTP load of N concurrent keep-alive connections with its latency percentiles.

The client runs on the same machine as the server (2 cores here), so every CPU cycle it spends is taken from the
server: it uses http.client on one persistent connection per thread, which costs a fraction of what `requests`
does per call. Even so, the bare-Flask ceiling it measures is partly the client's own limit.
"""

import http.client
import itertools
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from config import DEFAULT_MODEL_KEY
from tests.stack import MODEL_PATHS, Stack, start_redis

# (method, path, JSON body or None): what one call of a load sends.
Call = tuple[str, str, bytes | None]


@dataclass
class Load:
    """What one load run measured: every completed request's latency (seconds) and the wall time it took."""

    latencies: list[float]
    seconds: float

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000

    @classmethod
    def combined(cls, loads: list["Load"]) -> "Load":
        """Several runs of the same load (alternated with others, so that drift hits all of them alike) as one."""
        return cls([latency for load in loads for latency in load.latencies], sum(load.seconds for load in loads))

    def row(self, name: str) -> str:
        return f"{name:<34} {self.rate:8.0f} req/s   p50 {self.p50_ms:6.1f} ms   p99 {self.p99_ms:6.1f} ms"


# Limits too high to refuse anything a benchmark sends; they still cost what they cost (the rate limit is counted in
# Redis on every request).
GENEROUS_LIMITS = {"API_RATE_LIMIT": "10000000", "MAX_QUEUED_PER_KEY": "10000000"}


@contextmanager
def web_stack(**environ: str) -> Iterator[Stack]:
    """The web tier (`python wsgi.py`, as the Procfile runs it) on an embedded Redis in a temporary folder, with
    GENEROUS_LIMITS and no worker: submitted jobs stay queued. `environ` adds settings."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        redis, socket = start_redis(folder)
        try:
            stack = Stack({"LLAMALITH_INSTANCE": str(folder / "instance"), "REDIS_URL": f"unix://{socket}",
                           "SECRET_KEY": "bench", "LLM_MODELS": DEFAULT_MODEL_KEY, **MODEL_PATHS,
                           **GENEROUS_LIMITS, **environ}, folder)
            try:
                stack.start_web()
                yield stack
            finally:
                stack.stop()
        finally:
            redis.terminate()
            redis.wait()


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def run_load(base_url: str, headers: dict[str, str], next_call: Callable[[], Call], connections: int = 16,
             seconds: float = 10.0, expect: int = 200) -> Load:
    """`connections` threads, each on its own keep-alive connection, send `next_call()` back to back for `seconds`.
    Any answer other than `expect` stops the run: a refused request would make the rate mean nothing."""
    address = urlsplit(base_url)
    prefix = address.path
    deadline = time.perf_counter() + seconds
    per_thread: list[list[float]] = [[] for _ in range(connections)]
    failures: list[str] = []

    def client(latencies: list[float]) -> None:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        try:
            while time.perf_counter() < deadline and not failures:
                method, path, body = next_call()
                started = time.perf_counter()
                connection.request(method, prefix + path, body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                latencies.append(time.perf_counter() - started)
                if response.status != expect:
                    failures.append(f"{method} {path}: {response.status} {answer[:200]!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(latencies,)) for latencies in per_thread]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} unexpected answers, first: {failures[0]}")
    return Load(list(itertools.chain(*per_thread)), elapsed)

