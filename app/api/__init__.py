"""The JSON API: every route needs an API key (`Authorization: Bearer <key>` or `X-API-Key`)."""

from flask import Blueprint

from app.keys import require_key

bp = Blueprint("api", __name__)
bp.before_request(require_key)
# What the shared checks refuse (app/submissions.py's Refused) is answered app-wide, by app/errors.py.

from app.api import conversations, events, prompt_templates, routes  # noqa: E402,F401  (modules register their routes on bp)
