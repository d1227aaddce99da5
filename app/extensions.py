"""Extension objects, created unbound here and bound to the app in `create_app`, and the app's own shared
state as typed attributes (`current()`), instead of string keys in `app.extensions`."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, cast

from flask import Flask, current_app
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase

from app.strict_json import StrictJSONProvider

if TYPE_CHECKING:
    from redis import Redis

    from app.key_cache import KeyCache
    from app.llm import ModelCache
    from app.request_counts import RequestCounts
    from app.reader_slots import Slots
    from config import Settings


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()


class Llamalith(Flask):
    """The Flask app plus what its processes share. Set by `create_app`, except `models` and `worker_name`
    (set by the worker)."""

    json_provider_class = StrictJSONProvider
    settings: Settings
    redis: Redis
    tokenizers: ModelCache  # vocabulary only: the web process checks that an input fits before accepting it
    readers: Slots  # requests waiting on a job's tokens (event streams, OpenAI-style calls), capped
    estimates: dict[str, tuple[float, float | None]]  # per model: (reuse until, seconds per queue place)
    snapshots: "Snapshots"  # noqa: F821  the line as it stood a moment ago (app/places.py)
    key_cache: KeyCache  # API keys checked a moment ago
    request_counts: RequestCounts  # HTTP requests not yet counted in Redis
    rate_counts: "RateCounts"  # noqa: F821  app/limits.py's counts in Redis, and the hits taken ahead
    models: ModelCache  # the worker's warm models
    worker_slots: "WorkerSlots"  # noqa: F821  the jobs the worker runs at once (app/worker_slots.py)
    worker_name: str  # host:tag:pid, recorded on the jobs this worker runs
    stopping: threading.Event  # the worker was told to stop: its running job goes back to the queue
    shutting_down: threading.Event  # the web process is stopping: open event streams end so clients reconnect


def current() -> Llamalith:
    return cast(Llamalith, current_app)
