"""One log format for the web process and the worker: JSON lines (text when attached to a terminal; LOG_FORMAT
overrides), each with the request id it belongs to. A request's id comes from its X-Request-ID header when that is
a short token, else it is made here; it goes back in the response, onto the jobs the request makes, and into the
worker's lines while it runs such a job. Log messages name jobs and keys by id, never prompts, answers or secrets."""

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import datetime, timezone

from flask import Flask, Response, g, request

HEADER = "X-Request-ID"
VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # a token, not free text: it ends up in logs and headers
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def configure(log_format: str | None) -> None:
    """Give the root logger our handler, once per process; handlers others added (pytest's) stay."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if any(isinstance(handler, _Handler) for handler in root.handlers):
        return
    handler = _Handler()
    use_json = (log_format or ("text" if sys.stderr.isatty() else "json")) == "json"
    handler.setFormatter(JsonFormatter() if use_json else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)


class _Handler(logging.StreamHandler):
    def emit(self, record: logging.LogRecord) -> None:
        record.request_id = request_id.get()
        super().emit(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage(),
                 "request_id": getattr(record, "request_id", None)}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def init_app(app: Flask) -> None:
    @app.before_request
    def take_request_id() -> None:
        sent = request.headers.get(HEADER, "")
        g.request_id = sent if VALID.fullmatch(sent) else uuid.uuid4().hex
        request_id.set(g.request_id)

    @app.after_request
    def send_request_id(response: Response) -> Response:
        response.headers[HEADER] = g.get("request_id", "")  # set first thing, before any other hook can answer
        return response
