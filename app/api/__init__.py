"""The JSON API: every route needs an API key (`Authorization: Bearer <key>` or `X-API-Key`)."""

from flask import Blueprint

bp = Blueprint("api", __name__)

from app.api import auth, routes  # noqa: E402,F401  (routes register themselves on bp)
