"""What a request's body may be, and reading it: the size limit of each route (which the web server also applies
from the headers, app/serving.py) and its JSON. The faces read bodies through here; the rules below them never read
Flask's request."""

from collections.abc import Callable
from typing import Any, NamedTuple

from flask import request

from app.extensions import current
from app.submissions import Refused


def json_body() -> Any:
    """The request's JSON, or None when it is not JSON; nesting too deep for the parser is refused, not a crash."""
    try:
        return request.get_json(force=True, silent=True)
    except RecursionError:
        raise Refused("invalid_json", "the JSON body is nested too deeply") from None


class BodyLimit(NamedTuple):
    limit: int  # bytes
    setting: str  # its name, as the environment spells it
    code: str  # the code of the 413

    def check(self, length: int | None) -> None:
        """Refuses a body whose Content-Length is over the limit."""
        if length is not None and length > self.limit:
            raise Refused(self.code, f"the body is {length} bytes, over the limit of {self.limit} ({self.setting})",
                          status=413)


def larger_body(setting: str, code: str = "too_large") -> Callable[[Callable], Callable]:
    """Marks a view whose body may be larger than MAX_REQUEST_BYTES (an import, a batch file): up to the setting
    named. The web server refuses a longer Content-Length before reading the body (app/serving.py), and the view
    calls `limit_body` for bodies sent without one."""

    def mark(view: Callable) -> Callable:
        view.body_limit = (setting, code)
        return view

    return mark


def body_limit(settings, view: Callable | None) -> BodyLimit:
    """The largest body `view` takes: its `larger_body` mark, else MAX_REQUEST_BYTES."""
    setting, code = getattr(view, "body_limit", ("max_request_bytes", "too_large"))
    return BodyLimit(getattr(settings, setting), setting.upper(), code)


def limit_body() -> None:
    """In a view marked `larger_body`: its Content-Length is checked before the body is read, and a body without
    one is cut off at the limit."""
    limit = body_limit(current().settings, current().view_functions.get(request.endpoint))
    limit.check(request.content_length)
    request.max_content_length = limit.limit
