"""The JSON API: every route needs an API key (`Authorization: Bearer <key>` or `X-API-Key`)."""

from flask import Blueprint

from app.keys import require_key

bp = Blueprint("api", __name__)
bp.before_request(require_key)

from app.api import events, routes  # noqa: E402,F401  (modules register their routes on bp)
