"""The browser UI: pages and htmx partials behind a login.

Static files are served by this blueprint so they live under BASE_PATH with the pages (a reverse proxy
that forwards only /chat/ still serves them)."""

from flask import Blueprint, Response, abort, redirect, request, url_for
from flask_login import current_user
from sqlalchemy import ColumnElement, true

bp = Blueprint("ui", __name__, static_folder="../static", static_url_path="/static")


def visible(owner_column) -> ColumnElement[bool]:
    """What the signed-in user may see in lists: their own rows; an admin sees everyone's."""
    return true() if current_user.is_admin else owner_column == current_user.id


def viewable_or_404(row):
    """A conversation or job the signed-in user may look at (their own, or anyone's for an admin)."""
    if row is None or not (row.user_id == current_user.id or current_user.is_admin):
        abort(404)
    return row


def owned_or_404(row):
    """A conversation or job the signed-in user may change: only their own, admins included. Another user's
    is a 404, as if it did not exist."""
    if row is None or row.user_id != current_user.id:
        abort(404)
    return row


def wants_fragment() -> bool:
    """htmx asks for a fragment, except when it restores history: that needs the whole page."""
    return request.headers.get("HX-Request") == "true" and "HX-History-Restore-Request" not in request.headers


@bp.after_request
def keep_pages_private(response: Response) -> Response:
    """Pages are per-user and live: never cache them (the back button after logout must not show them),
    and since one URL answers htmx with a fragment and browsers with a page, caches must tell them apart."""
    if request.endpoint not in ("ui.static", "ui.highlight_css"):
        response.headers["Cache-Control"] = "no-store"
        response.vary.add("HX-Request")
    return response


@bp.get("/")
def index():
    return redirect(url_for("ui.conversations"))


from app.ui import (account, answers, auth, batches, chat, job_pages, keys, prompt_templates, queue,  # noqa: E402,F401
                    render, transfer)  # (routes and filters register themselves on bp)
