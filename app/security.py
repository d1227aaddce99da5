"""Safe defaults every process gets: response headers that keep pages from being framed, sniffed or fed foreign
script; session cookies marked Secure whenever the request came over HTTPS; instance files only the service's
user can read."""

import os
from pathlib import Path

from flask import Flask, Request, Response, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

# Everything the pages load comes from this site: htmx and app.js as files (no inline script, no eval), one
# stylesheet and the highlight colours (no inline style), and the favicon as a data: URL.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
                           "object-src 'none'")
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class SessionInterface(SecureCookieSessionInterface):
    """SECURE_COOKIES, or automatically when this request came over HTTPS (behind a proxy: with TRUST_PROXY)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return super().get_cookie_secure(app) or request.is_secure

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """Without a cookie, the empty session the parent would give, without first building its signer (API calls
        send no cookie, and the signer was 4% of a poll); with one, the parent's."""
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    app.session_interface = SessionInterface()

    @app.after_request
    def add_headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def protect_instance(folder: Path) -> None:
    """The instance folder holds the database, the secret key and Redis's data: 700 for the folder, and every file
    this process creates there (or finds) readable by its user only."""
    os.umask(0o077)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink():
            path.chmod(0o600)
