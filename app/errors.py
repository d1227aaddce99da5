"""One place turns failures into answers: JSON `{"error": {code, message}}` for the API, OpenAI's error object
(`{"error": {message, type, code, param}}`) under /v1, HTML for pages."""

import logging

from flask import Flask, jsonify, render_template, request
from pydantic import ValidationError
from sqlalchemy.exc import DataError
from werkzeug.exceptions import BadRequest, HTTPException

from app.extensions import db

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
                   param: str | None = None):
    if _openai_face():
        body = {"message": message, "type": OPENAI_TYPES.get(status, "server_error"), "code": code, "param": param}
    else:
        body = {"code": code, "message": message}
    return jsonify(error=body), status, headers or {}


def _openai_face() -> bool:
    return request.blueprint == "v1" or "/v1/" in request.path


def _wants_json() -> bool:
    return "/api/" in request.path or _openai_face() or request.accept_mimetypes.best == "application/json"


def register(app: Flask) -> None:
    @app.errorhandler(APIError)
    def api_error(exc: APIError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, exc.param)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if _wants_json():
            code = (exc.name or "error").lower().replace(" ", "_")
            return error_response(exc.code or 500, code, exc.description or exc.name)
        return render_template("error.html", error=exc), exc.code

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
