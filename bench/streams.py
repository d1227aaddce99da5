"""Do open event streams slow everyone else down? Job polls at 16 concurrent connections with no event stream open
and with 32 open, against one web process.

    .venv/bin/python bench/streams.py [--seconds 10] [--rounds 3] [--connections 16] [--streams 32]

One `python wsgi.py` (waitress, as the Procfile runs it) on an embedded Redis in a temporary folder, with the
default settings except rate limits too high to refuse (bench/load.py), and no worker. Each stream is a
`GET /api/jobs/{id}/events` on a queued job, so it stays open: its waitress thread asks Redis for tokens every second
and checks the key and the job every 5 s, when it sends a keep-alive. A key may hold SSE_MAX_STREAMS_PER_KEY streams
(8 by default), so the streams come from as many API keys as that takes (4 for 32), each following its own queued
job; the per-process cap, SSE_MAX_STREAMS, must let all of them in. Polls (`GET /api/jobs/{id}`) run as in
bench/api_load.py, without and with the streams, alternated in --rounds short runs (after closing the streams, the
next round waits until their threads have ended). Target (issue 10): 32 open streams add at most 20% to the poll's
p50. Record results in docs/benchmarks.md.
"""

import argparse
import math
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from app.follow import TICK_SECONDS as KEEPALIVE_SECONDS  # noqa: E402
from bench.load import Load, run_load, web_stack  # noqa: E402
from bench.summary import summary  # noqa: E402
from tests.stack import Stack  # noqa: E402

MAX_SLOWDOWN = 1.2  # the poll p50 with the streams open, at most this times the p50 without
# A closed stream's thread ends when a keep-alive write finds the client gone: the second one after the close at most.
RELEASE_SECONDS = 2 * KEEPALIVE_SECONDS + 2


def stream_targets(stack: Stack, count: int) -> list[tuple[str, dict]]:
    """(events URL, headers) of `count` streams, spread over as few keys as the per-key cap allows; each key follows
    its own queued job."""
    per_key = stack.app.settings.sse_max_streams_per_key
    targets = []
    for n in range(math.ceil(count / per_key)):
        headers = stack.user(f"streamer-{n}")
        job = requests.post(stack.url + "/api/submit", json={"user_input": "Nobody works on this."},
                            headers=headers, timeout=10).json()
        targets += [(f"{stack.url}/api/jobs/{job['job_id']}/events", headers)] * min(per_key, count - n * per_key)
    return targets


def open_streams(targets: list[tuple[str, dict]], held: ExitStack) -> None:
    """Open every stream; each is closed when `held` is."""
    for url, headers in targets:
        stream = held.enter_context(requests.get(url, headers=headers, stream=True, timeout=30))
        stream.raise_for_status()  # 429 when a cap does not let it in


def measure(streams: int, connections: int, seconds: float, rounds: int) -> tuple[Load, Load]:
    """Polls (without, with `streams` open streams), alternated in `rounds` short runs of each so that drift in the
    machine's speed (and other work on it) hits both alike."""
    with web_stack() as stack:
        job_id = stack.submit(user_input="Polled while others stream.")["job_id"]
        targets = stream_targets(stack, streams)

        def poll() -> Load:
            return run_load(stack.url + "/api", stack.headers, lambda: ("GET", f"/jobs/{job_id}", None),
                            connections, seconds / rounds)

        without, during = [], []
        for n in range(rounds):
            if n:
                time.sleep(RELEASE_SECONDS)  # the last round's streams must be gone, threads and all
            without.append(poll())
            with ExitStack() as held:
                open_streams(targets, held)
                during.append(poll())
        return Load.combined(without), Load.combined(during)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time of each load, in all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="short runs each load is split into, alternating")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--streams", type=int, default=32)
    args = parser.parse_args()
    without, during = measure(args.streams, args.connections, args.seconds, args.rounds)
    slowdown = during.p50_ms / without.p50_ms
    print(f"{args.connections} polling connections")
    print(without.row("no streams open"))
    print(during.row(f"{args.streams} streams open"))
    print(f"poll p50 with streams / without: {slowdown:.2f} (target <= {MAX_SLOWDOWN})")
    summary(f"poll p50 ms, {args.streams} streams open", during.p50_ms, without.p50_ms, f"<= {MAX_SLOWDOWN}")


if __name__ == "__main__":
    main()
