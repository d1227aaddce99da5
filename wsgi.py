"""The web process: `python wsgi.py` serves with waitress; `flask --app wsgi ...` runs commands."""

import signal
import sys
import threading
import time

from config import ConfigError

try:
    from app import create_app

    app = create_app()
except ConfigError as exc:
    sys.exit(f"llamalith: {exc}")

SHUTDOWN_GRACE = 30  # seconds in-flight requests get to finish after SIGTERM
CHANNEL_TIMEOUT = 60  # seconds a connection may stay silent (event streams send a keep-alive every 5)


def main() -> None:
    from waitress import create_server, wasyncore
    from waitress.channel import HTTPChannel

    settings = app.settings
    sockets: dict = {}
    # send_bytes=1: write each streamed chunk at once instead of buffering 18 kB (SSE tokens). Every open SSE
    # stream holds a thread for its whole life (capped below the thread count, app/api/events.py). Idle
    # connections cost no thread, so many may wait; one silent for CHANNEL_TIMEOUT is closed. A body over all of
    # MAX_REQUEST_BYTES, IMPORT_MAX_BYTES and BATCH_FILE_MAX_BYTES is refused from its Content-Length, before it is
    # read; a smaller one over its route's limit (MAX_REQUEST_BYTES but for imports and batch files) is refused by
    # Flask, before the app reads it.
    server = create_server(app, map=sockets, host=settings.host, port=settings.port, threads=settings.web_threads,
                           connection_limit=1000, channel_timeout=CHANNEL_TIMEOUT, send_bytes=1,
                           max_request_body_size=max(settings.max_request_bytes, settings.import_max_bytes,
                                                         settings.batch_file_max_bytes),
                           ident="llamalith")
    stopping = app.shutting_down
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    print(f"Llamalith is listening on http://{settings.host}:{settings.port}{settings.base_path}/", flush=True)
    while not stopping.is_set():
        wasyncore.loop(timeout=0.5, map=sockets, count=1)

    # Graceful stop: refuse new connections, keep serving the requests already in flight, then exit.
    server.del_channel()
    server.socket.close()
    deadline = time.monotonic() + SHUTDOWN_GRACE
    while _serving(sockets, HTTPChannel) and time.monotonic() < deadline:
        wasyncore.loop(timeout=0.1, map=sockets, count=1)
    server.task_dispatcher.shutdown(timeout=1)
    print("Llamalith web stopped", flush=True)


def _serving(sockets: dict, channel_class) -> bool:
    return any(isinstance(channel, channel_class) and channel.requests for channel in sockets.values())


if __name__ == "__main__":
    main()
