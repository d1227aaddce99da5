"""The JSON API: every route needs an API key (`Authorization: Bearer <key>` or `X-API-Key`)."""

from flask import Blueprint

from app.errors import error_response
from app.keys import require_key
from app.submissions import Refused

bp = Blueprint("api", __name__)
bp.before_request(require_key)


@bp.errorhandler(Refused)
def refused(refused: Refused):
    """A submission or a save the shared checks refused: an error answer with its status."""
    headers = {"Retry-After": "30"} if refused.status == 429 else None
    return error_response(refused.status, refused.code, refused.message, headers)

from app.api import conversations, events, prompt_templates, routes  # noqa: E402,F401  (modules register their routes on bp)
