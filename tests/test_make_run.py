"""`make run` as the Procfile runs it (honcho, embedded Redis, web, a supervised worker): a worker killed with
kill -9 comes back, the stack keeps serving, and the job it was running still ends done; Ctrl-C stops it all
cleanly, the embedded Redis last."""

import os
import re
import signal
import subprocess
import sys

import psutil
import pytest
import requests

from config import ROOT
from tests.stack import wait_for, wait_for_line

SERVING = r"worker\.1\s+\|.*\bworker \S+:(\d+) serving"  # text or JSON log lines


@pytest.mark.same_on_postgres
def test_a_killed_worker_is_restarted_and_its_job_still_ends_done(make_run):
    process, output, environ = make_run
    wait_for_line(output, r"^admin password: ")
    url = wait_for_line(output, r"open (http://\S+/chat)/ and sign in").group(1)
    first = wait_for_line(output, SERVING)
    wait_for_line(output, r"Llamalith is listening on")
    key = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "keys", "create", "ops"], env=environ,
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    job_id = requests.post(url + "/api/submit", headers=headers, timeout=10,
                           json={"user_input": "Write a long story about a lighthouse.", "max_tokens": 300}).json()["id"]
    wait_for(lambda: requests.get(f"{url}/api/jobs/{job_id}", headers=headers, timeout=5).json()["result"])

    os.kill(int(first.group(1)), signal.SIGKILL)
    restarted = wait_for_line(output, SERVING, after=first.end())
    assert restarted.group(1) != first.group(1)
    assert requests.get(url + "/healthz", timeout=5).ok and process.poll() is None
    wait_for(lambda: requests.get(f"{url}/api/jobs/{job_id}", headers=headers, timeout=5).json()["status"] == "done",
             timeout=120)
    job = requests.get(f"{url}/api/jobs/{job_id}", headers=headers, timeout=5).json()
    assert job["attempts"] == 2 and job["result"]
    assert re.search(r"worker process \d+ ended \(exit code -9\); starting a new one", output.read_text())



def test_ctrl_c_stops_every_process_cleanly_redis_last(make_run):
    process, output, environ = make_run
    wait_for_line(output, SERVING)
    wait_for_line(output, r"Llamalith is listening on")
    redis_server = [p for p in psutil.process_iter(["cmdline"])
                    if "redis-server" in " ".join(p.info["cmdline"] or []) and environ["LLAMALITH_INSTANCE"]
                    in " ".join(p.info["cmdline"] or [])]
    assert len(redis_server) == 1
    os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C
    process.wait(timeout=20)
    psutil.wait_procs(redis_server, timeout=10)
    text = output.read_text()
    assert "sending SIGKILL" not in text, "a process outlived honcho's grace"
    assert "wait for Redis" not in text and "waits for Redis" not in text  # the worker stopped while Redis served
    assert not redis_server[0].is_running()
