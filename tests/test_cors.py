"""CORS preflights allow what the URL's routes allow: a page on an allowed origin can delete its batch file
(tests/test_security.py checks which origins are let in)."""

import pytest

from app import create_app
from app.extensions import db
from config import load_settings

ORIGIN = "https://tools.example.com"


@pytest.fixture
def cors_client(environ):
    app = create_app(load_settings({**environ, "CORS_ORIGINS": ORIGIN}))
    yield app.test_client()
    with app.app_context():
        db.engine.dispose()


def preflight(client, path: str, method: str):
    return client.options(path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": method,
                                         "Access-Control-Request-Headers": "authorization"})


def allowed_methods(answer) -> set[str]:
    return {method.strip() for method in answer.headers["Access-Control-Allow-Methods"].split(",")}


def test_a_preflight_allows_the_methods_the_urls_routes_have(cors_client):
    delete = preflight(cors_client, "/chat/v1/files/file-abc123", "DELETE")
    assert delete.status_code == 204 and delete.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert {"GET", "DELETE", "OPTIONS"} <= allowed_methods(delete) and "POST" not in allowed_methods(delete)
    assert {"POST", "OPTIONS"} <= allowed_methods(preflight(cors_client, "/chat/api/submit", "POST"))
    assert "DELETE" not in allowed_methods(preflight(cors_client, "/chat/api/submit", "DELETE"))


def test_a_preflight_from_another_origin_still_allows_nothing(cors_client):
    other = cors_client.options("/chat/v1/files/file-abc123", headers={
        "Origin": "https://evil.example.com", "Access-Control-Request-Method": "DELETE"})
    assert "Access-Control-Allow-Methods" not in other.headers and "Access-Control-Allow-Origin" not in other.headers
