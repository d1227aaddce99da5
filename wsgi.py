"""The web process: `python wsgi.py` serves with waitress; `flask --app wsgi ...` runs commands."""

import sys

from config import ConfigError

try:
    from app import create_app

    app = create_app()
except ConfigError as exc:
    sys.exit(f"llamalith: {exc}")


def main() -> None:
    from waitress import serve

    settings = app.config["SETTINGS"]
    print(f"Llamalith is listening on http://{settings.host}:{settings.port}{settings.base_path}/", flush=True)
    # SSE streams hold a thread each for their whole life, hence more threads than waitress's default 4.
    # send_bytes=1: write each streamed chunk at once instead of buffering 18 kB (SSE tokens).
    serve(app, host=settings.host, port=settings.port, threads=32, channel_timeout=300, send_bytes=1,
          ident="llamalith")


if __name__ == "__main__":
    main()
