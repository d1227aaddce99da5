"""JSON as RFC 8259 defines it: Python's parser also takes NaN, Infinity and -Infinity, which no other parser
reads back (PostgreSQL's JSON columns refuse them), so a body holding one is refused like any invalid JSON."""

import json
from typing import Any

from flask.json.provider import DefaultJSONProvider


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def loads(text: str | bytes) -> Any:
    return json.loads(text, parse_constant=_refuse)


class StrictJSONProvider(DefaultJSONProvider):
    """`request.get_json()` through `loads` above."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return json.loads(s, parse_constant=_refuse, **kwargs)
