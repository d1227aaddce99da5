"""The web server's side of the app: waitress's settings from ours, and a request whose body is certain to be refused
answered from its headers alone, so waitress never waits for, reads or spools to disk a body nobody will take."""

import json
import resource
from http import HTTPStatus

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.utilities import Error, RequestEntityTooLarge
from werkzeug.exceptions import HTTPException

from app import request_body, submissions
from app.errors import error_body
from app.extensions import Llamalith

CHANNEL_TIMEOUT = 60  # seconds a connection may stay silent (event streams send a keep-alive every 5)
MAX_CONNECTIONS = 1000  # client connections open at once; more wait in the listen backlog, costing nothing here
# Descriptors each part of the process may hold, so that the connections are limited to what is left: the database
# pool and Redis connections (per web thread), the models' files, logs and waitress's own socket and pipe.
FIXED_DESCRIPTORS = 64
DESCRIPTORS_PER_THREAD = 4  # a database connection (SQLite: its file, WAL and shared memory) and a Redis one
DESCRIPTORS_PER_CONNECTION = 2  # its socket, and a temporary file while its body or answer overflows memory
KEYED_FACES = {"api", "v1", "ollama"}  # the blueprints whose every route needs an API key
CREDENTIAL_HEADERS = ("AUTHORIZATION", "X_API_KEY")  # as waitress's parser names them


def descriptors_needed(web_threads: int, connections: int = MAX_CONNECTIONS) -> int:
    return FIXED_DESCRIPTORS + DESCRIPTORS_PER_THREAD * web_threads + DESCRIPTORS_PER_CONNECTION * connections


def raise_descriptor_limit(web_threads: int) -> int:
    """The soft limit on open descriptors, raised (up to the hard limit, as any process may) to what MAX_CONNECTIONS
    needs: distributions start processes at 1024. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = descriptors_needed(web_threads)
    wanted = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
        except (ValueError, OSError):  # a container's own ceiling may be lower than it says: keep what there is
            pass
    return soft


def connection_limit(web_threads: int, descriptors: int) -> int:
    """As many connections as `descriptors` leave room for, at most MAX_CONNECTIONS. Over the limit, waitress stops
    accepting until some close instead of failing on a descriptor it cannot have."""
    spare = descriptors - descriptors_needed(web_threads, connections=0)
    return max(1, min(MAX_CONNECTIONS, spare // DESCRIPTORS_PER_CONNECTION))


def waitress_options(app: Llamalith, descriptors: int) -> dict:
    """waitress's settings (create_server's keywords) from ours.

    send_bytes=1: each streamed chunk is written at once instead of buffering 18 kB (SSE tokens). Every open SSE
    stream holds a thread for its whole life (capped below the thread count, app/api/events.py). Idle connections
    cost no thread, so many may wait; one silent for CHANNEL_TIMEOUT is closed. poll(), not select(), which fails
    on a descriptor numbered over 1023. waitress refuses a body of max_request_body_size or more, so that is one
    over the largest any route takes; each route's own limit is checked from the headers (HeaderChecks)."""
    settings = app.settings
    options = {"threads": settings.web_threads, "connection_limit": connection_limit(settings.web_threads, descriptors),
               "channel_timeout": CHANNEL_TIMEOUT, "send_bytes": 1, "asyncore_use_poll": True,
               "max_request_body_size": largest_body(app) + 1, "ident": "llamalith"}
    if settings.trust_proxy:
        # waitress drops every X-Forwarded-* header unless it comes from the trusted proxy; from it, they set the
        # client's address (login throttling per client) and scheme (Secure cookies over https).
        options.update(trusted_proxy=settings.trusted_proxy, trusted_proxy_count=settings.trusted_proxy_count,
                       trusted_proxy_headers=set(settings.trusted_proxy_headers))
    return options


def largest_body(app: Llamalith) -> int:
    return max(request_body.body_limit(app.settings, view).limit for view in app.view_functions.values())


def channel_class(app: Llamalith) -> type[HTTPChannel]:
    """waitress's connection class, its requests parsed by HeaderChecks for `app`."""
    parser = type("AppHeaderChecks", (HeaderChecks,), {"app": app})
    return type("AppChannel", (HTTPChannel,), {"parser_class": parser})


class Refusal(Error):
    """An answer waitress sends in place of the app's (a JSON error in the face's shape); the connection then
    closes, so the body the client may still be sending is never read."""

    def __init__(self, status: int, code: str, message: str, face: str | None):
        super().__init__(message)
        self.code, self.reason = status, HTTPStatus(status).phrase
        self.error = error_body(status, code, message, face)

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        body = json.dumps({"error": self.error}).encode()
        return f"{self.code} {self.reason}", [("Content-Type", "application/json")], body


class HeaderChecks(HTTPRequestParser):
    """waitress's request parser; once the headers are in, a request is refused at once if its Content-Length is
    over its route's limit, or if it carries a body to an API route without any key (a key is checked by the app,
    but a stranger's body need not wait for that). A chunked body, which has no Content-Length, is refused as soon
    as it has grown over the limit."""

    app: Llamalith
    limit: request_body.BodyLimit | None = None  # the route's, once the headers are in
    face: str | None = None  # the route's blueprint: the answer is in its face's error shape

    def received(self, data: bytes) -> int:
        reading_headers = not self.headers_finished
        consumed = super().received(data)
        # waitress's own 413 (over the largest limit) is answered in the same words as the others.
        checkable = self.error is None or isinstance(self.error, RequestEntityTooLarge)
        if reading_headers and self.headers_finished and not self.empty and checkable:
            refusal = self.refusal()
        elif self.chunked and self.limit and self.error is None:
            refusal = self.over_limit(len(self.body_rcv))
        else:
            refusal = None
        if refusal:
            self.error, self.completed, self.expect_continue = refusal, True, False
            return len(data)  # the rest of this read is the refused body, not a next request
        return consumed

    def refusal(self) -> Refusal | None:
        view, self.face = self.route()
        has_body = self.chunked or self.content_length > 0
        if has_body and self.face in KEYED_FACES and not any(self.headers.get(name) for name in CREDENTIAL_HEADERS):
            return Refusal(401, "invalid_api_key" if self.face == "v1" else "unauthorized",
                           "a valid API key is required: send 'Authorization: Bearer <key>'", self.face)
        self.limit = request_body.body_limit(self.app.settings, view)
        return self.over_limit(self.content_length)

    def over_limit(self, length: int) -> Refusal | None:
        try:
            self.limit.check(length)
        except submissions.Refused as refused:
            return Refusal(refused.status, refused.code, refused.message, self.face)
        return None

    def route(self) -> tuple:
        """The view the request would reach and its blueprint's name; (None, None) when it reaches none."""
        path = self.path.encode("latin-1").decode("utf-8", "replace")  # as werkzeug decodes PATH_INFO
        try:
            endpoint, _ = self.app.url_map.bind("localhost").match(path, self.command)
        except HTTPException:  # no such route or method, or a redirect
            return None, None
        return self.app.view_functions.get(endpoint), endpoint.rpartition(".")[0] or None
