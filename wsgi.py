"""The web process: `python wsgi.py` serves with waitress; `flask --app wsgi ...` runs commands."""

import gc
import signal
import sys
import time

from waitress import create_server, wasyncore
from waitress.channel import HTTPChannel

from config import ConfigError

try:
    from app import create_app

    app = create_app()
except ConfigError as exc:
    sys.exit(f"llamalith: {exc}")

SHUTDOWN_GRACE = 30  # seconds in-flight requests get to finish after SIGTERM


def main() -> None:
    settings = app.settings
    # What start-up made (modules, the app, SQLAlchemy's mappings: ~130,000 objects) lives as long as the process;
    # out of the collector's sight, a full collection takes ~9 ms instead of ~98 with every thread stopped (and
    # forked web processes keep sharing its pages).
    gc.freeze()
    listening = f"Llamalith is listening on http://{settings.host}:{settings.port}{settings.base_path}/"
    if settings.web_processes == 1:
        serve({"host": settings.host, "port": settings.port}, announce=listening)
        return
    from app import prefork

    where = {"sockets": [prefork.listening_socket(settings.host, settings.port)]}
    print(f"{listening} ({settings.web_processes} web processes)", flush=True)
    sys.exit(prefork.run(settings.web_processes, lambda: serve(where, forked=True)))


def serve(where: dict, announce: str | None = None, forked: bool = False) -> None:
    """Serve on `where` (waitress's host and port, or its sockets) until SIGTERM or SIGINT, then stop gracefully;
    `announce` is printed once the port is bound."""
    from app import serving
    from app.extensions import db
    from app.orphans import STOP_SIGNALS

    if forked:
        with app.app_context():
            db.engine.dispose(close=False)  # start-up's connections belong to the parent
    settings = app.settings
    app.key_cache.listen(app.redis)
    sockets: dict = {}
    descriptors = serving.raise_descriptor_limit(settings.web_threads)
    server = create_server(app, map=sockets, **where, **serving.waitress_options(app, descriptors))
    server.channel_class = serving.channel_class(app)
    use_poll = server.adj.asyncore_use_poll
    if server.adj.connection_limit < serving.MAX_CONNECTIONS:
        print(f"llamalith: {descriptors} open files allowed (ulimit -n), so at most {server.adj.connection_limit} "
              "connections at a time; raise the limit for more", flush=True)
    signalled: list[int] = []

    def stop(signum, _frame) -> None:
        # No lock here: a second signal (Ctrl-C reaches the whole group, then the parent passes SIGTERM on) can
        # arrive while this handler runs, and would wait forever for a lock the first one holds.
        signalled.append(signum)
        server.pull_trigger()  # wakes the loop below at once, not at its next timeout

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    if announce:
        print(announce, flush=True)
    while not signalled:
        wasyncore.loop(timeout=0.5, use_poll=use_poll, map=sockets, count=1)
    app.shutting_down.set()  # open event streams end, so that their clients reconnect elsewhere

    # Graceful stop: refuse new connections, keep serving the requests already in flight, then exit.
    server.del_channel()
    server.socket.close()
    deadline = time.monotonic() + SHUTDOWN_GRACE
    while _serving(sockets, HTTPChannel) and time.monotonic() < deadline:
        wasyncore.loop(timeout=0.1, use_poll=use_poll, map=sockets, count=1)
    server.task_dispatcher.shutdown(timeout=1)
    app.request_counts.flush()
    print("Llamalith web stopped", flush=True)


def _serving(sockets: dict, channel_class) -> bool:
    return any(isinstance(channel, channel_class) and channel.requests for channel in sockets.values())


if __name__ == "__main__":
    main()
