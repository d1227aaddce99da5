"""Another user's submits through POST /api/submit every ~100 ms while something big happens (a batch being made,
a conversation imported): how long each waited. Used by tests and bench/big_files.py."""

import threading
import time

import requests

from bench.load import percentile


class OtherSubmits:
    """`with OtherSubmits(url, headers) as submits:` submits in a thread until the block ends; then `latencies`
    holds each submit's seconds (sent `sent_at` seconds after the block began), and `p99` and `summary` sum them
    up."""

    def __init__(self, url: str, headers: dict[str, str], interval: float = 0.1):
        self.url, self.headers, self.interval = url + "/api/submit", headers, interval
        self.latencies: list[float] = []
        self.sent_at: list[float] = []
        self.failures: list[str] = []
        self._began = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._submit_until_stopped)

    def __enter__(self) -> "OtherSubmits":
        answer = requests.post(self.url, json={"user_input": "Hello?"}, headers=self.headers, timeout=60)
        assert answer.status_code == 202, answer.text  # and the web process has loaded its tokenizer: not timed
        self._began = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _submit_until_stopped(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                started = time.perf_counter()
                answer = session.post(self.url, json={"user_input": "Hello?"}, headers=self.headers, timeout=600)
                self.latencies.append(time.perf_counter() - started)
                self.sent_at.append(started - self._began)
                if answer.status_code != 202:
                    self.failures.append(f"{answer.status_code} {answer.text[:200]}")
                self._stop.wait(self.interval)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)

    def summary(self) -> str:
        worst = max(range(len(self.latencies)), key=self.latencies.__getitem__)
        return (f"{len(self.latencies)} submits: p50 {percentile(self.latencies, 50) * 1000:.0f} ms, p99 "
                f"{self.p99 * 1000:.0f} ms, worst {self.latencies[worst] * 1000:.0f} ms (sent at "
                f"{self.sent_at[worst]:.1f} s)")
