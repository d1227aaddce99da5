"""The JSON API: every route needs an API key (`Authorization: Bearer <key>` or `X-API-Key`)."""

from flask import Blueprint

bp = Blueprint("api", __name__)

from app.api import auth, events, routes  # noqa: E402,F401  (modules register their routes on bp)
