"""`make test-n8n`: the workflows in docs/n8n/ run by a real n8n against a real stack (Redis, web, worker, the
real model) in a temporary folder. Not part of `make test`: it installs n8n from the npm registry.

    .venv/bin/python tests/n8n/run.py [NAME ...]    # only the named workflows (file names without .json)

n8n is installed once into N8N_INSTALL_DIR (default /tmp/n8n-home, about 8 minutes) and reused; everything
else, n8n's own database included, is thrown away after the run.
"""

import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))  # run as a script, the project is not on the path yet

import requests  # noqa: E402

from tests.stack import MODEL_PATHS, Stack, free_port, start_redis, wait_for  # noqa: E402

N8N_VERSION = "1.123.81"
INSTALL_DIR = Path(os.environ.get("N8N_INSTALL_DIR", "/tmp/n8n-home"))
WORKFLOWS = ROOT / "docs" / "n8n"
HOST_PLACEHOLDER = "http://LLAMALITH_HOST:8000"
# Each workflow, and the check of what it did (below): the field of its last node's output that holds the model's
# answer, or a check of its own.
CHECKS = {"submit-and-poll": "answer", "submit-with-callback": "answer", "openai-chat-model": "text",
          "ai-agent-ollama": "agent", "ai-agent-openai": "agent", "structured-output": "structured",
          "embeddings-ollama": "embeddings"}
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


def import_files(n8n: Path, env: dict, folder: Path, host: str, key: str, names: list[str]) -> dict[str, str]:
    """The credentials the workflows name (holding `key`) and the workflows, pointed at `host`; their n8n ids."""
    credentials = [
        {"id": "llamalithApiKey", "name": "Llamalith API key", "type": "httpHeaderAuth",
         "data": {"name": "X-API-Key", "value": key}},
        {"id": "llamalithOpenAi", "name": "Llamalith (OpenAI API)", "type": "openAiApi",
         "data": {"apiKey": key, "url": f"{host}/chat/v1"}},
        # n8n's Ollama credential sends its API key as `Authorization: Bearer <key>`.
        {"id": "llamalithOllama", "name": "Llamalith (Ollama API)", "type": "ollamaApi",
         "data": {"baseUrl": f"{host}/chat/ollama", "apiKey": key}},
    ]
    (folder / "credentials.json").write_text(json.dumps(credentials))
    n8n_cli(n8n, env, "import:credentials", f"--input={folder / 'credentials.json'}")
    ids = {}
    for number, name in enumerate(names):
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
    """`n8n execute` the workflow; its `resultData` (every node's runs) once the execution has ended.

    `execute` returns when the execution ends or starts waiting for a webhook. A waiting execution is in n8n's
    database, and the `n8n start` server resumes it when the webhook comes: so the result is read from there.
    """
    try:
        n8n_cli(n8n, env, "execute", f"--id={workflow_id}")
    except RuntimeError as failed:  # a failed execution: its error, and what its sub-nodes were given, are below
        print(str(failed)[-300:])
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
        given = {node: [run.get("inputOverride") for run in runs if run.get("inputOverride")]
                 for node, runs in result.get("runData", {}).items()}
        raise RuntimeError(f"execution {status}: {json.dumps(result.get('error'))[:1000]}\n      sub-nodes were "
                           f"given: {json.dumps({node: runs for node, runs in given.items() if runs})[:3000]}")
    return result


def output(result: dict, node: str | None = None) -> list[dict]:
    """The items a node (by default the last one executed) put out on its last run."""
    node = node or result["lastNodeExecuted"]
    runs = result["runData"][node]
    items = [item["json"] for item in (runs[-1].get("data", {}).get("main") or [[]])[0] or []]
    assert items, f"{node!r} put out no items: runs {json.dumps(runs)[:1500]}; nodes run: {list(result['runData'])}"
    return items


def sub_node_runs(result: dict, node: str, connection: str) -> list[dict]:
    """What a sub-node (a chat model, a tool, embeddings) was given and gave back, run by run: n8n records them
    under the connection type (`ai_tool`, `ai_languageModel`, ...) instead of `main`."""
    return [{"input": run.get("inputOverride", {}).get(connection, [[{}]])[0][0].get("json"),
             "output": (run.get("data", {}).get(connection) or [[{}]])[0][0].get("json")}
            for run in result["runData"].get(node, [])]


def check_answer(field: str, result: dict, jobs: list[dict]) -> str:
    """The last node's `field` is the answer of the (last) job the workflow made."""
    answer = output(result)[0].get(field)
    assert answer and answer.strip(), f"no answer in {field!r}"
    assert jobs and answer.strip() == jobs[0]["result"].strip(), f"{answer!r} is not the last job's result"
    return repr(answer.strip())


def check_agent(result: dict, jobs: list[dict]) -> str:
    """The agent called its tool: one job's answer is the call, a later job was told what the tool returned, and
    the agent ended with an answer."""
    jobs = sorted(jobs, key=lambda job: job["id"])
    calls = [(job, strict_object(job["result"])) for job in jobs if job["result"].lstrip().startswith("{")]
    calls = [(job, call) for job, call in calls if call and "name" in call]
    assert calls, f"no job answered with a call: {[job['result'] for job in jobs]}"
    called, call = calls[0]
    # Ollama's tool messages may not name the function (n8n's do not): then it is "A function returned: ...".
    told = [job for job in jobs if job["id"] > called["id"] and TOLD.match(job["user_input"])]
    assert told, f"no job after {called['id']} was given the tool's result"
    tool = sub_node_runs(result, "get_weather", "ai_tool")
    assert tool, "the tool's node did not run"
    answer = output(result)[0].get("output")
    assert answer and answer.strip(), "the agent has no output"
    assert not answer.startswith("Calling "), f"the agent ended on another call: {answer!r}"
    return (f"job {called['id']} called {json.dumps(call)}; the tool {tool[0]['input']} -> {tool[0]['output']}; "
            f"job {told[0]['id']} was told {told[0]['user_input']!r}; the agent answered {answer.strip()!r}")


def check_structured(result: dict, jobs: list[dict]) -> str:
    """The chain's `output` is the parsed object, with the schema's fields."""
    parsed = output(result)[0].get("output")
    assert isinstance(parsed, dict), f"output is not an object: {output(result)[0]!r}"
    assert isinstance(parsed.get("city"), str) and isinstance(parsed.get("country"), str), parsed
    return f"{json.dumps(parsed)} (job {jobs[0]['id']} answered {jobs[0]['result']!r})"


def check_embeddings(result: dict, jobs: list[dict]) -> str:
    """The texts went into the store as vectors made by embedding jobs, and the query found the right one first."""
    kinds = [job["kind"] for job in jobs]
    assert kinds.count("embedding") >= 2, f"jobs: {kinds}"
    found = output(result)
    assert found, "the store returned nothing"
    first = found[0]["document"]["pageContent"]
    assert "cat" in first.lower(), f"the nearest text is {first!r}"
    return f"{kinds.count('embedding')} embedding jobs; nearest to the query: {first!r} (score {found[0]['score']:.3f})"


TOLD = re.compile(r"(The function \S+|A function) returned: ")


def strict_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


CHECKERS = {"agent": check_agent, "structured": check_structured, "embeddings": check_embeddings}


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


def main(names: list[str]) -> int:
    unknown = set(names) - CHECKS.keys()
    if unknown:
        print(f"no such workflow: {', '.join(sorted(unknown))} (there are: {', '.join(CHECKS)})")
        return 2
    names = names or list(CHECKS)
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
            ids = import_files(n8n, env, folder, stack.url.removesuffix("/chat"), key, names)
            # The server receives the callback that resumes the waiting execution `execute` leaves behind.
            server = subprocess.Popen([str(n8n), "start"], env=env, stdout=open(folder / "n8n-start.log", "w"),
                                      stderr=subprocess.STDOUT)
            wait_for(lambda: requests.get(f"http://127.0.0.1:{n8n_port}/healthz/readiness", timeout=1).ok, timeout=120)
            for name in names:
                started = time.monotonic()
                before = max([job["id"] for job in stack.get("/api/jobs?limit=1")["jobs"]], default=0)
                try:
                    result = run_workflow(n8n, env, ids[name])
                    # The jobs the workflow made, newest first.
                    jobs = [job for job in stack.get("/api/jobs?limit=100")["jobs"] if job["id"] > before]
                    check = CHECKS[name]
                    shown = CHECKERS[check](result, jobs) if check in CHECKERS else check_answer(check, result, jobs)
                    print(f"ok    {name}.json: {shown} ({time.monotonic() - started:.1f} s)", flush=True)
                except Exception as error:
                    failures += 1
                    traceback.print_exc()
                    jobs = [job for job in stack.get("/api/jobs?limit=100")["jobs"] if job["id"] > before]
                    shown = [{field: job[field] for field in ("id", "kind", "status", "user_input", "result", "error")}
                             for job in reversed(jobs)]
                    print(f"FAIL  {name}.json: {type(error).__name__}: {error}\n"
                          f"      its jobs: {json.dumps(shown)[:4000]}", flush=True)
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
    print(f"{len(names) - failures} of {len(names)} workflows passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
