"""Do big batch files and imports leave other users alone? A batch made from a 50,000-line file, and a 10,000-turn
conversation imported, each while another user submits through POST /api/submit every ~100 ms.

    .venv/bin/python bench/big_files.py [--lines 50000] [--turns 10000]

One `python wsgi.py` (as the Procfile runs it) on an embedded Redis in a temporary folder, no worker. Prints how long
each took and the other user's submit latencies, against the same submits on the idle server. Target (issue 18):
the other user's submit p99 under 1 s throughout. Record results in docs/benchmarks.md.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from bench.load import web_stack  # noqa: E402
from bench.summary import summary  # noqa: E402
from tests.factories import conversation_file  # noqa: E402
from tests.other_submits import OtherSubmits  # noqa: E402


def batch_file(lines: int) -> bytes:
    return "".join(json.dumps({"custom_id": f"n{i}", "method": "POST", "url": "/v1/chat/completions",
                               "body": {"model": "smollm2-135m", "max_tokens": 16,
                                        "messages": [{"role": "user", "content": f"Say {i}."}]}}) + "\n"
                   for i in range(lines)).encode()


def while_submitting(stack, other: dict[str, str], name: str, action) -> OtherSubmits:
    with OtherSubmits(stack.url, other) as submits:
        started = time.perf_counter()
        action()
        print(f"{name}: {time.perf_counter() - started:.1f} s; other user's {submits.summary()}", flush=True)
    return submits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--turns", type=int, default=10_000)
    args = parser.parse_args()
    with web_stack() as stack:
        other = stack.user("dora")
        idle = while_submitting(stack, other, "idle server (5 s)", lambda: time.sleep(5))
        file_id = requests.post(stack.url + "/v1/files", headers=stack.headers, data={"purpose": "batch"},
                                files={"file": ("big.jsonl", batch_file(args.lines))}, timeout=600).json()["id"]

        def make_batch() -> None:
            batch = requests.post(stack.url + "/v1/batches", headers=stack.headers, timeout=3600, json={
                "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}).json()
            assert batch["status"] == "in_progress" and batch["request_counts"]["total"] == args.lines, batch

        def import_conversation() -> None:
            body = json.dumps(conversation_file("big", *[(f"Question {n}?", f"Answer {n}.")
                                                         for n in range(args.turns)]))
            answer = requests.post(stack.url + "/api/conversations/import", data=body, timeout=3600,
                                   headers={**stack.headers, "Content-Type": "application/json"})
            assert answer.status_code == 201, answer.text

        batch = while_submitting(stack, other, f"a batch of {args.lines} lines", make_batch)
        imported = while_submitting(stack, other, f"an import of {args.turns} turns", import_conversation)
    summary("submit p99 while a batch is made (s)", batch.p99, idle.p99, "<= 1 s", measured=batch.p99)
    summary("submit p99 while importing (s)", imported.p99, idle.p99, "<= 1 s", measured=imported.p99)


if __name__ == "__main__":
    main()
