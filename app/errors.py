"""One place turns failures into answers: JSON `{"error": {code, message}}` for the API, OpenAI's error object
(`{"error": {message, type, code, param}}`) under /v1, Ollama's (`{"error": "message"}`) under /ollama, HTML for
pages."""

import logging

from flask import Flask, jsonify, render_template, request
from pydantic import ValidationError
from sqlalchemy.exc import DataError
from werkzeug.exceptions import BadRequest, HTTPException, MethodNotAllowed, NotFound, default_exceptions

from app.extensions import db
from app.submissions import Refused

log = logging.getLogger(__name__)


class APIError(Exception):
    """A client mistake or a refused action, with a machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.param = status, code, message, headers or {}, param


def validation_message(exc: ValidationError, whole: str = "body") -> str:
    """pydantic's first complaint as one line that names the field by its path ("turns.0.job.status: ...");
    `whole` names the document itself."""
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or whole
    message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
    return f"{field}: {message}"


# OpenAI's error `type` for each status (what its SDKs turn into exception classes).
OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error", 429: "rate_limit_error"}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   param: str | None = None, kind: str | None = None):
    """`kind` is OpenAI's error type where it is not the status's usual one."""
    return jsonify(error=error_body(status, code, message, face(), param, kind)), status, headers or {}


def error_body(status: int, code: str, message: str, face: str | None, param: str | None = None,
               kind: str | None = None) -> dict | str:
    """The answer's `error`: OpenAI's object on its face, Ollama's bare message on its own, ours elsewhere (also for
    what the web server refuses before the app sees it, app/serving.py). `face` is the blueprint's name."""
    if face == "v1":
        return {"message": message, "type": kind or OPENAI_TYPES.get(status, "server_error"), "code": code,
                "param": param}
    if face == "ollama":
        return message
    return {"code": code, "message": message}


def face() -> str | None:
    """The protocol face a request came to, by its blueprint or, for a URL no route matched, by its path."""
    if request.blueprint in ("v1", "ollama"):
        return request.blueprint
    path = request.path
    return "ollama" if "/ollama/" in path else "v1" if "/v1/" in path else request.blueprint


def _openai_face() -> bool:
    return face() == "v1"


def _wants_json() -> bool:
    return "/api/" in request.path or face() in ("v1", "ollama") or request.accept_mimetypes.best == "application/json"


def _unserved_url(exc: NotFound | MethodNotAllowed):
    """A URL or method /v1 does not serve, named as OpenAI's API names it ("Invalid URL (GET /v1/foo)"), so an SDK
    or n8n shows what was asked for rather than a generic page-not-found text."""
    asked = f"{request.method} {request.path}"
    if isinstance(exc, MethodNotAllowed):
        allowed = ", ".join(sorted(exc.valid_methods or ()))
        return error_response(405, "method_not_allowed", f"Invalid method ({asked}); this URL takes {allowed}",
                              {"Allow": allowed}, kind="invalid_request_error")
    return error_response(404, "not_found", f"Invalid URL ({asked})", kind="invalid_request_error")


def register(app: Flask) -> None:
    @app.errorhandler(APIError)
    def api_error(exc: APIError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, exc.param)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if _openai_face() and isinstance(exc, NotFound | MethodNotAllowed):
            return _unserved_url(exc)
        if _wants_json():
            code = (exc.name or "error").lower().replace(" ", "_")
            return error_response(exc.code or 500, code, exc.description or exc.name)
        return render_template("error.html", error=exc), exc.code

    @app.errorhandler(Refused)
    def refused(refused: Refused):
        """What the shared checks (app/submissions.py, app/intake.py) refused: the same status and code on every
        face; a page names the code too, as the chat form does (`data-refused`)."""
        if _wants_json():
            headers = {"Retry-After": "30"} if refused.status == 429 else None
            return error_response(refused.status, refused.code, refused.message, headers, refused.param)
        error = default_exceptions.get(refused.status, BadRequest)(refused.message)
        return render_template("error.html", error=error, refused=refused.code), refused.status

    @app.errorhandler(DataError)
    def unstorable_value(exc: DataError):
        """PostgreSQL refuses values SQLite takes without a word, a NUL character in text above all: coming from a
        request, that is the request's mistake, not the server's."""
        db.session.rollback()
        return http_error(BadRequest("The request holds a value the database cannot store, such as a NUL character."))

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        db.session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        if _wants_json():
            return error_response(500, "internal_error", "Internal error; the server log has the details.")
        return render_template("error.html", error=None), 500
