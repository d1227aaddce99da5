"""The test client: each request runs in an app context of its own, as in production (no `g` shared with the
test body or other requests), and sends what a browser would (CSRF tokens from the pages, htmx headers)."""

import re

from flask.testing import FlaskClient

from tests.factories import NAME, PASSWORD

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class Client(FlaskClient):
    def open(self, *args, **kwargs):
        with self.application.app_context():
            return super().open(*args, **kwargs)

    def csrf_token(self, page: str = "/chat/login") -> str:
        return TOKEN.search(self.get(page, follow_redirects=True).text).group(1)

    def login(self, name: str = NAME, password: str = PASSWORD, **kwargs):
        return self.post("/chat/login", data={"name": name, "password": password, "csrf_token": self.csrf_token()},
                         **kwargs)

    def htmx(self, method: str, url: str, **kwargs):
        """A request as htmx sends it: HX-Request, and the CSRF token as a header (from the page's body)."""
        headers = {"HX-Request": "true", "X-CSRFToken": self.csrf_token("/chat/conversations"),
                   **kwargs.pop("headers", {})}
        return self.open(url, method=method, headers=headers, **kwargs)
