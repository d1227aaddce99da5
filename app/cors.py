"""CORS for browser callers of the JSON APIs (/api, /v1, /ollama): off unless CORS_ORIGINS lists exact origins. API keys
travel in headers, never cookies, so no credentials are allowed; a preflight needs no key, and allows the methods
the URL's routes have (DELETE /v1/files/{id} too)."""

from flask import Flask, Response, request

ALLOWED_HEADERS = "Authorization, Content-Type, X-API-Key, Idempotency-Key, Last-Event-ID, X-Llamalith-Conversation"
EXPOSED_HEADERS = "X-Llamalith-Job-Id, Location, Retry-After, Idempotent-Replayed"


def init_app(app: Flask) -> None:
    settings = app.settings
    allowed = set(settings.cors_origins)
    faces = tuple(settings.base_path + face for face in ("/api/", "/v1/", "/ollama/"))

    def allowed_origin() -> str | None:
        origin = request.headers.get("Origin")
        return origin if origin in allowed and request.path.startswith(faces) else None

    def routed_methods() -> list[str]:
        return sorted(app.create_url_adapter(request).allowed_methods())

    @app.before_request
    def preflight():
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response = Response(status=204)
            if origin := allowed_origin():
                response.headers.update({"Access-Control-Allow-Origin": origin,
                                         "Access-Control-Allow-Methods": ", ".join(routed_methods()),
                                         "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                                         "Access-Control-Max-Age": "600"})
            response.vary.add("Origin")
            return response
        return None

    @app.after_request
    def allow_origin(response: Response) -> Response:
        if (origin := allowed_origin()) and "Access-Control-Allow-Origin" not in response.headers:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if allowed:
            response.vary.add("Origin")
        return response
