"""How long does a worker take to stop? Stops of a worker whose slots are woken at a stop (app/worker_slots.py:
wake) against stops of the same worker on a Redis that refuses CLIENT commands, whose slots see the stop only at
their next one-second wait for a job (as every worker did before `wake`), alternating, in one run on one machine.

    .venv/bin/python bench/worker_stop.py [--stops 6]

Prints the median time from SIGTERM to the worker's exit both ways, with every worker idle (all its slots waiting).
Record results in docs/benchmarks.md.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.summary import summary  # noqa: E402
from config import DEFAULT_MODEL_KEY  # noqa: E402
from tests.stack import MODEL_PATHS, Stack, start_redis  # noqa: E402

REFUSE_CLIENT = ("--rename-command", "CLIENT", "")


def stop_time(stack: Stack) -> float:
    worker = stack.start_worker()
    time.sleep(1.5)  # every slot waiting for a job
    started = time.perf_counter()
    worker.terminate()
    worker.wait(timeout=60)
    return time.perf_counter() - started


def measure(stops: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as folder:
        stacks, redises = [], []
        for name, options in (("woken", ()), ("not-woken", REFUSE_CLIENT)):
            (Path(folder) / name).mkdir()
            redis, socket = start_redis(Path(folder) / name, *options)
            environ = {"LLAMALITH_INSTANCE": f"{folder}/{name}/instance", "REDIS_URL": f"unix://{socket}",
                       "SECRET_KEY": "bench", "LLM_MODELS": DEFAULT_MODEL_KEY, **MODEL_PATHS}
            stacks.append(Stack(environ, Path(folder) / name))
            redises.append(redis)
        try:
            for stack in stacks:
                stack.start_web()  # migrates its database
            woken, not_woken = [], []
            for _ in range(stops):
                woken.append(stop_time(stacks[0]))
                not_woken.append(stop_time(stacks[1]))
            return woken, not_woken
        finally:
            for stack, redis in zip(stacks, redises):
                stack.stop()
                redis.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=6)
    args = parser.parse_args()
    woken, not_woken = measure(args.stops)
    print(f"woken     : {' '.join(f'{each:.2f}' for each in woken)} s")
    print(f"not woken : {' '.join(f'{each:.2f}' for each in not_woken)} s")
    summary("worker stop (s), slots woken vs not", statistics.median(woken), statistics.median(not_woken), "<= 0.5")


if __name__ == "__main__":
    main()
