"""The browser UI: pages and htmx partials behind a login.

Static files are served by this blueprint so they live under BASE_PATH with the pages (a reverse proxy
that forwards only /chat/ still serves them)."""

from flask import Blueprint, Response, redirect, request, url_for

bp = Blueprint("ui", __name__, static_folder="../static", static_url_path="/static")


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


from app.ui import answers, auth, chat, job_pages, render  # noqa: E402,F401  (routes and filters register themselves on bp)
