"""`make test-n8n`: the workflows in docs/n8n/ run by a real n8n against a real stack (Redis, web, worker, the
real model) in a temporary folder. Not part of `make test`: it installs n8n from the npm registry.

    .venv/bin/python tests/n8n/run.py

n8n is installed once into N8N_INSTALL_DIR (default /tmp/n8n-home, about 8 minutes) and reused; everything
else, n8n's own database included, is thrown away after the run.
"""

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))  # run as a script, the project is not on the path yet

import requests  # noqa: E402

from tests.stack import MODEL_PATHS, Stack, free_port, start_redis, wait_for  # noqa: E402

N8N_VERSION = "1.123.81"
INSTALL_DIR = Path(os.environ.get("N8N_INSTALL_DIR", "/tmp/n8n-home"))
WORKFLOWS = ROOT / "docs" / "n8n"
HOST_PLACEHOLDER = "http://LLAMALITH_HOST:8000"
# Each workflow, and the field of its last node's output that holds the model's answer.
ANSWER_FIELDS = {"submit-and-poll": "answer", "submit-with-callback": "answer", "openai-chat-model": "text"}
TIMEOUT = 300  # s, for one workflow, the model's answer included


def install_n8n() -> Path:
    """The n8n executable, installed into INSTALL_DIR unless this version already is."""
    done = INSTALL_DIR / f".installed-{N8N_VERSION}"
    if not done.exists():
        INSTALL_DIR.mkdir(parents=True, exist_ok=True)
        # n8n pins xlsx to a tarball on cdn.sheetjs.com, which cannot be reached from here; 0.18.5 is on npm.
        (INSTALL_DIR / "package.json").write_text(json.dumps(
            {"private": True, "dependencies": {"n8n": N8N_VERSION}, "overrides": {"xlsx": "0.18.5"}}, indent=2))
        print(f"Installing n8n {N8N_VERSION} into {INSTALL_DIR} (about 8 minutes, once)", flush=True)
        # No install scripts: isolated-vm does not build here (so task runners and the `vm` expression engine are
        # off, see n8n_environ). sqlite3 is the one native module n8n cannot run without.
        subprocess.run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=INSTALL_DIR, check=True)
        subprocess.run(["npm", "rebuild", "sqlite3"], cwd=INSTALL_DIR, check=True)
        done.touch()
    return INSTALL_DIR / "node_modules" / ".bin" / "n8n"


def n8n_environ(folder: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "N8N_USER_FOLDER": str(folder / "n8n"),  # its database, encryption key and settings: thrown away
        "N8N_PORT": str(port),
        "N8N_LISTEN_ADDRESS": "127.0.0.1",
        # $execution.resumeUrl is built from this: an address Llamalith may call (CALLBACK_ALLOWED_HOSTS).
        "WEBHOOK_URL": f"http://127.0.0.1:{port}/",
        "N8N_RUNNERS_ENABLED": "false",  # both need isolated-vm, left unbuilt by --ignore-scripts
        "N8N_EXPRESSION_ENGINE": "legacy",
        "N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS": "false",
        # Nothing but the npm registry is reachable: no telemetry, version checks or templates.
        "N8N_DIAGNOSTICS_ENABLED": "false",
        "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
        "N8N_TEMPLATES_ENABLED": "false",
    }


def import_files(n8n: Path, env: dict, folder: Path, host: str, key: str) -> dict[str, str]:
    """The credentials the workflows name (holding `key`) and the workflows, pointed at `host`; their n8n ids."""
    credentials = [
        {"id": "llamalithApiKey", "name": "Llamalith API key", "type": "httpHeaderAuth",
         "data": {"name": "X-API-Key", "value": key}},
        {"id": "llamalithOpenAi", "name": "Llamalith (OpenAI API)", "type": "openAiApi",
         "data": {"apiKey": key, "url": f"{host}/chat/v1"}},
    ]
    (folder / "credentials.json").write_text(json.dumps(credentials))
    n8n_cli(n8n, env, "import:credentials", f"--input={folder / 'credentials.json'}")
    ids = {}
    for number, name in enumerate(ANSWER_FIELDS):
        workflow = json.loads((WORKFLOWS / f"{name}.json").read_text().replace(HOST_PLACEHOLDER, host))
        workflow["id"] = ids[name] = f"llamalith{number}"  # `execute --id` needs it; n8n allows up to 16 characters
        (folder / f"{name}.json").write_text(json.dumps(workflow))
        n8n_cli(n8n, env, "import:workflow", f"--input={folder / name}.json")
    return ids


def n8n_cli(n8n: Path, env: dict, *args: str) -> None:
    result = subprocess.run([str(n8n), *args], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"n8n {' '.join(args)} failed:\n{(result.stdout + result.stderr)[-3000:]}")


def run_workflow(n8n: Path, env: dict, workflow_id: str) -> dict:
    """`n8n execute` the workflow; the output of its last node once the execution has ended.

    `execute` returns when the execution ends or starts waiting for a webhook. A waiting execution is in n8n's
    database, and the `n8n start` server resumes it when the webhook comes: so the result is read from there.
    """
    n8n_cli(n8n, env, "execute", f"--id={workflow_id}")
    database = Path(env["N8N_USER_FOLDER"]) / ".n8n" / "database.sqlite"

    def ended() -> tuple | None:
        with sqlite3.connect(database, timeout=30) as connection:
            row = connection.execute("SELECT e.status, d.data FROM execution_entity e JOIN execution_data d "
                                     "ON d.executionId = e.id WHERE e.workflowId = ? ORDER BY e.id DESC LIMIT 1",
                                     (workflow_id,)).fetchone()
        return row if row and row[0] not in ("new", "running", "waiting") else None

    wait_for(ended, timeout=TIMEOUT)
    status, data = ended()
    result = unflatten(data)["resultData"]
    if status != "success":
        raise RuntimeError(f"execution {status}: {json.dumps(result.get('error'))[:2000]}")
    last = result["lastNodeExecuted"]
    return result["runData"][last][-1]["data"]["main"][0][0]["json"]


def unflatten(text: str):
    """n8n stores execution data as `flatted` writes it: a JSON list whose first item is the value, and in which
    every string or container inside a container is the index (as a string) of another item of the list."""
    table = json.loads(text)

    def item(index: str):
        value = table[int(index)]
        if isinstance(value, list):
            return [resolve(element) for element in value]
        if isinstance(value, dict):
            return {name: resolve(element) for name, element in value.items()}
        return value

    def resolve(value):
        return item(value) if isinstance(value, str) else value

    return item("0")


def main() -> int:
    n8n = install_n8n()
    failures = 0
    with tempfile.TemporaryDirectory(prefix="llamalith-n8n-") as folder:
        folder = Path(folder)
        n8n_port = free_port()
        redis, socket = start_redis(folder)
        stack = Stack({"LLAMALITH_INSTANCE": str(folder / "instance"), "REDIS_URL": f"unix://{socket}",
                       "SECRET_KEY": "n8n", "CALLBACK_ALLOWED_HOSTS": f"127.0.0.1:{n8n_port}", **MODEL_PATHS}, folder)
        server = None
        try:
            stack.start_web()
            stack.start_worker()
            # As docs/n8n.md tells an operator: the key is the last line (the webhook secret is the line before).
            key = stack.cli("keys", "create", "n8n").splitlines()[-1]
            env = n8n_environ(folder, n8n_port)
            ids = import_files(n8n, env, folder, stack.url.removesuffix("/chat"), key)
            # The server receives the callback that resumes the waiting execution `execute` leaves behind.
            server = subprocess.Popen([str(n8n), "start"], env=env, stdout=open(folder / "n8n-start.log", "w"),
                                      stderr=subprocess.STDOUT)
            wait_for(lambda: requests.get(f"http://127.0.0.1:{n8n_port}/healthz/readiness", timeout=1).ok, timeout=120)
            for name, field in ANSWER_FIELDS.items():
                started = time.monotonic()
                try:
                    answer = run_workflow(n8n, env, ids[name]).get(field)
                    job = stack.get("/api/jobs?limit=1")["jobs"][0]  # the job the workflow made
                    assert answer and answer.strip(), f"no answer in {field!r}"
                    assert answer.strip() == job["result"].strip(), f"{answer!r} is not job {job['id']}'s result"
                    print(f"ok    {name}.json: {answer.strip()!r} ({time.monotonic() - started:.1f} s)", flush=True)
                except Exception as error:
                    failures += 1
                    job = stack.get("/api/jobs?limit=1")["jobs"]
                    print(f"FAIL  {name}.json: {error}\n      last job: {json.dumps(job[:1])}", flush=True)
        finally:
            if server:
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
            stack.stop()
            redis.terminate()
            redis.wait()
            if failures:
                for log in [folder / "n8n-start.log", *sorted(stack.logs.iterdir())]:
                    print(f"--- {log.name} (tail)\n{log.read_text()[-3000:]}")
    print(f"{len(ANSWER_FIELDS) - failures} of {len(ANSWER_FIELDS)} workflows answered")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
