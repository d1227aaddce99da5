"""The application factory: settings, extensions, blueprints, error handlers and CLI commands."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from redis import Redis
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.routing import IntegerConverter

from app import cors, keys, limits, logs, openapi, places, security
from app.extensions import Llamalith, csrf, db, login_manager, migrate
from app.llm import ModelCache
from app.reader_slots import Slots

if TYPE_CHECKING:
    from config import Settings


def create_app(settings: Settings | None = None) -> Llamalith:
    from config import load_settings  # config imports app.llm's settings classes, so not at the top

    settings = settings or load_settings()
    security.protect_instance(settings.instance_path)
    # Static files are served by the ui blueprint, under BASE_PATH like everything else.
    app = Llamalith(__name__, instance_path=str(settings.instance_path), static_folder=None)
    app.settings = settings
    app.stopping, app.shutting_down = threading.Event(), threading.Event()
    app.readers = Slots()
    app.estimates = {}
    app.snapshots = places.Snapshots()
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_PATH=settings.base_path or "/",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_SECURE=settings.secure_cookies,
        SQLALCHEMY_DATABASE_URI=settings.database_address,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings),
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,
    )
    logs.configure(settings.log_format)
    logs.init_app(app)
    security.init_app(app)
    cors.init_app(app)
    register_extensions(app, settings)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    return app


def _engine_options(settings: Settings) -> dict:
    if settings.database_address.startswith("sqlite"):
        # A connection kept per thread (made only when needed), so none is opened and closed per request.
        return {"connect_args": {"timeout": 30, "check_same_thread": False}, "pool_size": settings.web_threads + 4}
    return {"pool_pre_ping": True}


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL lets readers run beside the one writer, and writers wait for each other instead of failing.

    pysqlite's default transaction handling is kept on purpose: it opens a transaction only at the first
    write, so reads take no lock and a write never has to upgrade a read snapshot (that upgrade fails
    with "database is locked" at once, without waiting, when another connection wrote in between)."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def register_extensions(app: Llamalith, settings: Settings) -> None:
    db.init_app(app)
    migrate.init_app(app, db, directory=str(app.root_path + "/migrations"), render_as_batch=True)
    login_manager.init_app(app)
    csrf.init_app(app)
    keys.init_app(app)
    app.redis = Redis.from_url(settings.redis_address, health_check_interval=30)
    limits.init_app(app)
    # Vocabulary-only models, loaded on first use, to refuse inputs that cannot fit a model's context.
    app.tokenizers = ModelCache(settings.models, capacity=len(settings.models), vocab_only=True)


class DatabaseId(IntegerConverter):
    """<int:...> in every route: a number beyond the ids' INTEGER columns (32 bits in PostgreSQL, 64 in SQLite) is
    a 404, never an overflow. ASCII digits only: werkzeug's `\\d+` (and int()) also take other scripts' digits, so
    /jobs/١٢ would be job 12 under a second address."""

    regex = "[0-9]+"

    def __init__(self, url_map, *args, **kwargs):
        super().__init__(url_map, *args, **{"max": 2**31 - 1, **kwargs})


def register_blueprints(app: Llamalith) -> None:
    from app import health, metrics
    from app.api import bp as api_bp
    from app.api import openapi as api_openapi
    from app.ollama import bp as ollama_bp
    from app.ui import bp as ui_bp
    from app.v1 import bp as v1_bp
    from app.v1 import openapi as v1_openapi

    app.url_map.converters["int"] = DatabaseId
    prefix = app.settings.base_path
    for api in (api_bp, v1_bp, ollama_bp):  # keys, not cookies: nothing for CSRF to protect
        csrf.exempt(api)
    app.register_blueprint(api_bp, url_prefix=prefix + "/api")
    app.register_blueprint(v1_bp, url_prefix=prefix + "/v1")
    app.register_blueprint(ollama_bp, url_prefix=prefix + "/ollama")
    app.register_blueprint(ui_bp, url_prefix=prefix or None)
    app.add_url_rule(prefix + "/healthz", "healthz", health.healthz)
    app.add_url_rule(prefix + "/readyz", "readyz", health.readyz)
    metrics.init_app(app)
    # Outside both blueprints, since it describes both (and needs no key).
    spec = openapi.document(prefix, api_openapi.part("/api"), v1_openapi.part("/v1"))
    app.add_url_rule(prefix + "/api/openapi.json", "openapi", lambda: spec)


def register_errorhandlers(app: Llamalith) -> None:
    from app.errors import register

    register(app)


def register_commands(app: Llamalith) -> None:
    from app.commands import keys, users

    app.cli.add_command(keys)
    app.cli.add_command(users)
