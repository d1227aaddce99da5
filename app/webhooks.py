"""Webhooks: when a job with a `callback_url` ends, its JSON is POSTed there, signed with its API key's secret.

Deliveries run in a few threads of each worker process (`start`), beside the model work, which they cannot delay,
and never on a request's path. Each waits in a Redis sorted set by the time it is due; each attempt is claimed in
the database, so an attempt taken twice is made once. An attempt has CALLBACK_TIMEOUT in all to connect, send and
read the receiver's status line, and reads nothing more; a failed attempt is tried again after a pause that
doubles each time (2 s, 4 s, ...), up to CALLBACK_MAX_ATTEMPTS; the job shows how it went. Callback hosts must
be in CALLBACK_ALLOWED_HOSTS, and every address the host resolves to is checked, at submit and again at each
delivery: a private, loopback or link-local address only if it is listed literally, so the server cannot be turned
against the network it sits in.

Signature: `X-Llamalith-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`.
"""

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from datetime import timedelta, timezone
from urllib.parse import urlsplit

from redis import Redis, RedisError
from requests.utils import requote_uri
from sqlalchemy import or_, select, update

from app import job_views
from app.extensions import Llamalith, current, db
from app.models import ApiKey, Job, JobStatus, utcnow

log = logging.getLogger(__name__)

DUE = "llamalith:webhooks:due"  # sorted set of "<job id>:<attempt>", scored by the unix time it is due
FIRST_PAUSE = 2  # seconds before the first retry; doubles with every attempt
THREADS = 4  # deliveries at once per worker process; each ends within CALLBACK_TIMEOUT
POLL = 0.5  # seconds an idle delivery thread waits before it looks again
REDIS_RETRY = 5.0  # seconds a delivery thread waits when Redis did not answer
LEASE = 60  # seconds past CALLBACK_TIMEOUT that an attempt in flight stays claimed (a dead worker's is made again)
STATUS_LINE_BYTES = 4096  # all that is read of an answer: a receiver sending 1.5 GB costs nothing
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


class CallbackRefused(Exception):
    """`code`: invalid_callback_url for a URL that is not one, callback_not_allowed for one the server may not call."""

    def __init__(self, message: str, code: str = "callback_not_allowed"):
        super().__init__(message)
        self.code = code


def check_url(url: str) -> None:
    """Refuse a callback URL the server must not call (see the module's docstring)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)  # .port raises for "99999", "+1", "8 "
    except ValueError as exc:
        raise CallbackRefused(f"callback_url is not a valid URL: {exc}", "invalid_callback_url") from None
    if not url.isprintable() or any(character.isspace() for character in url):
        raise CallbackRefused("callback_url must not contain spaces or control characters", "invalid_callback_url")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise CallbackRefused("callback_url must be an http or https URL without credentials")
    allowed = {entry.lower() for entry in current().settings.callback_allowed_hosts}
    host = parts.hostname.lower()
    if host not in allowed and f"{host}:{port}" not in allowed:
        raise CallbackRefused(f"callback host '{host}:{port}' is not in CALLBACK_ALLOWED_HOSTS")
    for address in _addresses(host, port):
        if not address.is_global and str(address) not in allowed and f"{address}:{port}" not in allowed:
            raise CallbackRefused(f"callback host '{host}' resolves to {address}, an internal address not listed "
                                  "in CALLBACK_ALLOWED_HOSTS")


def _addresses(host: str, port: int) -> set:
    try:
        return {ipaddress.ip_address(info[4][0].split("%")[0]) for info in socket.getaddrinfo(host, port)}
    except (socket.gaierror, UnicodeError, ValueError):
        raise CallbackRefused(f"callback host '{host}' does not resolve") from None


def sign(secret: str, body: bytes, moment: int) -> str:
    digest = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={digest}"


def enqueue(job: Job) -> None:
    """Make the job's next attempt due at its `callback_next_at` (at once if unset), unless that attempt already
    waits; if Redis is down, the reconciler does it later."""
    moment = job.callback_next_at.replace(tzinfo=timezone.utc).timestamp() if job.callback_next_at else time.time()
    try:
        current().redis.zadd(DUE, {f"{job.id}:{job.callback_attempts}": moment}, nx=True)
    except RedisError as exc:
        log.warning("webhook of job %s not enqueued yet (%s)", job.id, exc)


def due() -> list[Job]:
    """Ended jobs whose delivery is pending, due and not in flight: what the reconciler enqueues."""
    return db.session.scalars(select(Job).where(
        Job.callback_status == PENDING, Job.status.in_([s.value for s in JobStatus if s.finished]),
        or_(Job.callback_next_at.is_(None), Job.callback_next_at <= utcnow()))).all()


def start(app: Llamalith, stop: threading.Event) -> list[threading.Thread]:
    """Deliver due webhooks in THREADS threads of this (worker) process until `stop` is set."""
    threads = [threading.Thread(target=_deliver_due, args=(app, stop), name=f"webhooks-{n}", daemon=True)
               for n in range(THREADS)]
    for thread in threads:
        thread.start()
    return threads


def _deliver_due(app: Llamalith, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            if taken := _take(app.redis):
                with app.app_context():
                    deliver(*taken)
                continue
        except RedisError as exc:  # Redis restarting, or stopped first at the stack's stop: one line, not a traceback
            log.warning("webhook deliveries wait for Redis (%s)", exc)
            stop.wait(REDIS_RETRY)
        except Exception:  # keep delivering: the database may be back next round (the reconciler re-adds)
            log.exception("webhook delivery round failed")
        stop.wait(POLL)


def _take(redis: Redis) -> tuple[int, int] | None:
    """(job id, attempt) of a due attempt, taken out of the set: ZREM is atomic, so exactly one thread takes it."""
    for member in redis.zrangebyscore(DUE, "-inf", time.time(), start=0, num=THREADS):
        if redis.zrem(DUE, member):
            job_id, attempt = member.decode().split(":")
            return int(job_id), int(attempt)
    return None


def deliver(job_id: int, attempt: int) -> str:
    """One delivery attempt. An attempt taken twice (the reconciler enqueues again what it cannot see in flight)
    is made once: only the claim that moves its `callback_next_at` past the deadline makes it."""
    if not _claim(job_id, attempt):
        return "skipped"
    job = db.session.get(Job, job_id)
    body = json.dumps(job_views.job_json(job)).encode()
    secret = db.session.scalar(select(ApiKey.webhook_secret).where(ApiKey.id == job.api_key_id))
    status, error = None, None
    try:
        check_url(job.callback_url)
        if secret is None:
            raise CallbackRefused("the job's API key is gone, so its webhook cannot be signed")
        status = post(job.callback_url, body, current().settings.callback_timeout, {
            "Content-Type": "application/json", "User-Agent": "Llamalith-Webhook",
            "X-Llamalith-Signature": sign(secret, body, int(time.time()))})
        if not 200 <= status < 300:
            error = f"the receiver answered {status}"
    except (CallbackRefused, DeliveryFailed) as exc:
        error = str(exc)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        error = f"the request failed: {type(exc).__name__}"
    _record(job, status, error)
    return job.callback_status


def _claim(job_id: int, attempt: int) -> bool:
    now = utcnow()
    in_flight_until = now + timedelta(seconds=current().settings.callback_timeout + LEASE)
    claimed = db.session.execute(
        update(Job).where(Job.id == job_id, Job.callback_status == PENDING, Job.callback_attempts == attempt,
                          or_(Job.callback_next_at.is_(None), Job.callback_next_at <= now))
        .values(callback_next_at=in_flight_until).execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return bool(claimed)


class DeliveryFailed(Exception):
    """The receiver did not answer in time, or not as HTTP does."""


def post(url: str, body: bytes, seconds: float, headers: dict[str, str]) -> int:
    """POST `body` to `url` and return the answer's status code. Connecting, sending and receiving the status line
    must all happen within `seconds`, however slowly the receiver trickles bytes; only the status line is read."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    connection = (http.client.HTTPSConnection if https else http.client.HTTPConnection)(
        parts.hostname, parts.port or (443 if https else 80), timeout=seconds)
    watchdog = _Watchdog(connection, seconds)
    try:
        connection.connect()
        if not watchdog.fired:
            connection.request("POST", requote_uri((parts.path or "/") + (f"?{parts.query}" if parts.query else "")),
                               body, headers)
            line = _status_line(connection.sock, watchdog)
    except OSError:
        if not watchdog.fired:
            raise
    finally:
        watchdog.timer.cancel()
        connection.close()
    if watchdog.fired:
        raise DeliveryFailed(f"no answer within CALLBACK_TIMEOUT ({seconds:g} s)")
    if not (found := re.match(rb"HTTP/\d(?:\.\d)? (\d{3})", line)):
        raise DeliveryFailed("the receiver's answer is not HTTP")
    return int(found.group(1))


class _Watchdog:
    """Shuts the connection's socket down at the deadline: a connect, send or read blocked on it ends at once."""

    def __init__(self, connection: http.client.HTTPConnection, seconds: float):
        self.connection, self.fired = connection, False
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True
        self.timer.start()

    def _fire(self) -> None:
        self.fired = True
        if (sock := self.connection.sock) is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: also under TLS, from any thread
            except OSError:
                pass  # closed already


def _status_line(sock: socket.socket, watchdog: _Watchdog) -> bytes:
    line = b""
    while b"\n" not in line and len(line) < STATUS_LINE_BYTES and not watchdog.fired:
        if not (chunk := sock.recv(STATUS_LINE_BYTES - len(line))):
            break
        line += chunk
    return line


def _record(job: Job, status: int | None, error: str | None) -> None:
    job.callback_attempts += 1
    job.callback_last_status, job.callback_error = status, error
    if error is None:
        job.callback_status = DELIVERED
    elif job.callback_attempts >= current().settings.callback_max_attempts:
        job.callback_status = FAILED
        log.warning("webhook of job %s failed %s times; giving up (%s)", job.id, job.callback_attempts, error)
    else:
        job.callback_next_at = utcnow() + timedelta(seconds=FIRST_PAUSE * 2 ** (job.callback_attempts - 1))
    db.session.commit()
    if job.callback_status == PENDING:
        enqueue(job)
