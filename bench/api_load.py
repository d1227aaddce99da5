"""Does the web tier shrug off load? Submits and polls at 16 concurrent connections against the web tier, next to a
bare Flask app on the same server (waitress, same threads and processes) answering the same JSON: the ceiling.

    .venv/bin/python bench/api_load.py [--seconds 10] [--rounds 5] [--connections 16] [--web-processes 2]

One `python wsgi.py` (waitress, WEB_THREADS threads, as the Procfile runs it, with WEB_PROCESSES forked processes on
the port: 2 by default, as installed) on an embedded Redis in a temporary folder, and no worker, so submitted
jobs just queue. API_RATE_LIMIT and MAX_QUEUED_PER_KEY are too high to refuse,
but still cost what they cost: the rate limit is counted in Redis on every request (bench/load.py).
Three loads, each --connections keep-alive connections sending back to back for --seconds in all, alternated in
--rounds short runs so that drift in the machine's speed hits all three alike:

- bare ceiling: `GET /chat/api/jobs/<id>` on a Flask app with only that route, returning one job's JSON as the
  product shows it, served by waitress with the product's thread count, in as many processes of its own;
- submit: `POST /api/submit` (validation, the prompt's token count, INSERT + COMMIT, RQ enqueue, the job's JSON);
- poll: `GET /api/jobs/{id}`, cycling over every job submitted so far (with no worker, all of them queued).

The client shares the 2 cores with the server, so it keeps itself cheap (bench/load.py) and still takes some of
the CPU the server could use, the bare app's most. Targets (issue 19, item 8): poll >= 0.25x and submit >= 0.12x
the bare ceiling's req/s, poll p99 <= 80 ms (issue 10 asked for 0.5x, 0.25x and 50 ms; the submit's p99 target
stays 50 ms). Record results in docs/benchmarks.md.
"""

import argparse
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from bench.load import Load, run_load, web_stack  # noqa: E402
from bench.summary import summary  # noqa: E402
from config import Settings  # noqa: E402
from tests.stack import free_port, wait_for  # noqa: E402

SUBMIT = json.dumps({"user_input": "Write a haiku about llamas."}).encode()
POLL_RATIO, SUBMIT_RATIO, POLL_P99_MS, SUBMIT_P99_MS = 0.25, 0.12, 80.0, 50.0


def serve_bare(port: int, threads: int, processes: int, job: str) -> None:
    """The ceiling: Flask and waitress with nothing else, one route answering the product's JSON for a job, in
    `processes` processes on the port as the product forks them (app/prefork.py)."""
    from flask import Flask
    from waitress import serve

    from app import prefork

    app = Flask("bare")
    answer = json.loads(job)
    app.get("/chat/api/jobs/<int:job_id>")(lambda job_id: answer)
    # The product's waitress options that matter for a small answer (wsgi.py).
    options = {"threads": threads, "send_bytes": 1, "ident": "bare", "_quiet": True}
    if processes == 1:
        serve(app, host="127.0.0.1", port=port, **options)
    else:
        listening = prefork.listening_socket("127.0.0.1", port)
        prefork.run(processes, lambda: serve(app, sockets=[listening], **options))


@contextmanager
def bare_server(job: dict, threads: int, processes: int) -> Iterator[str]:
    """The bare app in its own process(es), as the base URL of its API."""
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(port), str(threads), str(processes),
                               json.dumps(job)])
    try:
        url = f"http://127.0.0.1:{port}/chat/api"
        wait_for(lambda: requests.get(url + "/jobs/1", timeout=1).ok)
        yield url
    finally:
        server.terminate()
        server.wait()


def measure(connections: int, seconds: float, rounds: int, processes: int) -> tuple[Load, Load, Load, int]:
    """(bare ceiling, submit, poll, jobs queued at the end), alternated in `rounds` short runs of each so that drift
    in the machine's speed (and other work on it) hits all three alike."""
    with web_stack(WEB_PROCESSES=str(processes)) as stack:
        headers = {**stack.headers, "Content-Type": "application/json"}
        api = stack.url + "/api"
        first = stack.submit(user_input="warm-up")  # loads the model's vocabulary for the token count
        with bare_server(stack.get(f"/api/jobs/{first['job_id']}"), stack.app.settings.web_threads,
                         processes) as bare_api:
            bare, submit, poll = [], [], []
            for _ in range(rounds):
                bare.append(run_load(bare_api, {}, lambda: ("GET", "/jobs/1", None), connections, seconds / rounds))
                submit.append(run_load(api, headers, lambda: ("POST", "/submit", SUBMIT), connections,
                                       seconds / rounds, expect=202))
                ids = itertools.cycle([job_id for job_id, in stack.query("SELECT id FROM jobs")])
                poll.append(run_load(api, headers, lambda: ("GET", f"/jobs/{next(ids)}", None), connections,
                                     seconds / rounds))
        queued = stack.query("SELECT count(*) FROM jobs WHERE status = 'queued'")[0][0]
        return Load.combined(bare), Load.combined(submit), Load.combined(poll), queued


def report(bare: Load, submit: Load, poll: Load, queued: int, connections: int, processes: int) -> None:
    print(f"{connections} connections, {processes} web process(es); {queued} jobs queued at the end (polls cycle "
          "over all jobs submitted so far)")
    print(bare.row("bare Flask + waitress (ceiling)"))
    print(submit.row("POST /api/submit"))
    print(poll.row("GET /api/jobs/{id}"))
    print(f"poll / bare: {poll.rate / bare.rate:.2f} (target >= {POLL_RATIO})   "
          f"submit / bare: {submit.rate / bare.rate:.2f} (target >= {SUBMIT_RATIO})   "
          f"p99 targets: poll <= {POLL_P99_MS:.0f} ms, submit <= {SUBMIT_P99_MS:.0f} ms")
    summary("poll req/s", poll.rate, bare.rate, f">= {POLL_RATIO}")
    summary("submit req/s", submit.rate, bare.rate, f">= {SUBMIT_RATIO}")
    summary("poll p99 ms", poll.p99_ms, bare.p99_ms, f"<= {POLL_P99_MS:.0f} ms", poll.p99_ms)
    summary("submit p99 ms", submit.p99_ms, bare.p99_ms, f"<= {SUBMIT_P99_MS:.0f} ms", submit.p99_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time of each load, in all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="short runs each load is split into, alternating")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--web-processes", type=int, default=Settings.model_fields["web_processes"].default,
                        help="WEB_PROCESSES, and the bare app's processes (the default: as installed)")
    parser.add_argument("--serve-bare", nargs=4, metavar=("PORT", "THREADS", "PROCESSES", "JSON"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        port, threads, processes, job = args.serve_bare
        serve_bare(int(port), int(threads), int(processes), job)
        return
    measured = measure(args.connections, args.seconds, args.rounds, args.web_processes)
    report(*measured, args.connections, args.web_processes)


if __name__ == "__main__":
    main()
