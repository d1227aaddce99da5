"""Webhooks: when a job with a `callback_url` ends, its JSON is POSTed there, signed with its API key's secret.

Deliveries run in the workers (an RQ queue of their own, after all model work), never on a request's path. A
failed delivery is tried again after a pause that doubles each time, up to CALLBACK_MAX_ATTEMPTS; the job shows
how it went. Callback hosts must be in CALLBACK_ALLOWED_HOSTS, and every address the host resolves to is checked,
at submit and again at each delivery: a private, loopback or link-local address only if it is listed literally,
so the server cannot be turned against the network it sits in.

Signature: `X-Llamalith-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`.
"""

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from datetime import timedelta
from urllib.parse import urlsplit

import requests
from redis import RedisError
from rq import Queue
from sqlalchemy import or_, select

from app.extensions import current, db
from app.models import ApiKey, Job, JobStatus, utcnow

log = logging.getLogger(__name__)

QUEUE = "llamalith:webhooks"
FIRST_PAUSE = 2  # seconds before the first retry; doubles with every attempt
TIMEOUT = 10  # seconds a receiver has to answer
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


class CallbackRefused(Exception):
    pass


def check_url(url: str) -> None:
    """Refuse a callback URL the server must not call (see the module's docstring)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise CallbackRefused("callback_url must be an http or https URL without credentials")
    port = parts.port or (443 if parts.scheme == "https" else 80)
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


def rq_id(job: Job) -> str:
    """One RQ job per delivery attempt, so a duplicate of an attempt is recognised."""
    return f"llamalith-hook-{job.id}-{job.callback_attempts}"


def enqueue(job: Job) -> None:
    """Hand the job's delivery to the workers; if Redis is down, the reconciler does it later."""
    try:
        Queue(QUEUE, connection=current().redis).enqueue(
            deliver, job.id, job.callback_attempts, job_id=rq_id(job),
            job_timeout=TIMEOUT * 3, result_ttl=60, failure_ttl=3600, description=f"webhook of job {job.id}")
    except RedisError as exc:
        log.warning("webhook of job %s not enqueued yet (%s)", job.id, exc)


def due() -> list[Job]:
    """Ended jobs whose delivery is pending and due: what the reconciler enqueues."""
    return db.session.scalars(select(Job).where(
        Job.callback_status == PENDING, Job.status.in_([s.value for s in JobStatus if s.finished]),
        or_(Job.callback_next_at.is_(None), Job.callback_next_at <= utcnow()))).all()


def deliver(job_id: int, attempt: int) -> str:
    """RQ entry point: one delivery attempt. A duplicate (the same attempt enqueued twice) changes nothing."""
    from app.jobs import job_json  # the API's job JSON; jobs imports this module

    job = db.session.get(Job, job_id)
    if job is None or job.callback_status != PENDING or job.callback_attempts != attempt:
        return "skipped"
    body = json.dumps(job_json(job)).encode()
    secret = db.session.scalar(select(ApiKey.webhook_secret).where(ApiKey.id == job.api_key_id))
    status, error = None, None
    try:
        check_url(job.callback_url)
        if secret is None:
            raise CallbackRefused("the job's API key is gone, so its webhook cannot be signed")
        response = requests.post(job.callback_url, data=body, timeout=TIMEOUT, allow_redirects=False, headers={
            "Content-Type": "application/json", "User-Agent": "Llamalith-Webhook",
            "X-Llamalith-Signature": sign(secret, body, int(time.time()))})
        status = response.status_code
        if not 200 <= status < 300:
            error = f"the receiver answered {status}"
    except CallbackRefused as exc:
        error = str(exc)
    except requests.RequestException as exc:
        error = f"the request failed: {type(exc).__name__}"
    _record(job, status, error)
    return job.callback_status


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
