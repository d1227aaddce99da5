"""The whole product as the Procfile runs it: waitress, a real worker process, the embedded-style Redis,
the real model, driven over HTTP like the README's curl flow."""

import re
import subprocess

import requests

from config import ROOT


def test_readme_curl_flow_against_real_processes(stack):
    stack.start_web()
    stack.start_worker()
    job_id = stack.submit(user_input="Tell me a one-line joke.", session_id="story-123")["job_id"]
    job = stack.wait_job(job_id)
    assert job["status"] == "done" and job["result"]
    assert stack.get("/api/status/story-123")["response"] == job["result"]
    assert [j["id"] for j in stack.get("/api/jobs?conversation_id=story-123")["jobs"]] == [job_id]


def test_worker_loads_each_model_once(stack):
    stack.start_web()
    stack.start_worker()
    ids = [stack.submit(user_input=f"Say {n}.")["job_id"] for n in range(4)]
    assert all(stack.wait_job(job_id)["status"] == "done" for job_id in ids)
    assert len(re.findall(r"loaded model smollm2-135m", stack.log_text())) == 1


def test_readme_commands_work_as_written(stack):
    """The README's curl flow, extracted from the README and run by bash against a live stack."""
    stack.start_web()
    stack.start_worker()
    readme = (ROOT / "README.md").read_text()
    script = re.search(r"```bash\n(KEY=.*?)```", readme, re.S).group(1)
    script = script.replace("http://127.0.0.1:8000/chat", stack.url)
    script = re.sub(r"^KEY=.*$", f"KEY={stack.headers['Authorization'].split()[-1]}", script, flags=re.M)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert requests.get(stack.url + "/healthz", timeout=5).ok
