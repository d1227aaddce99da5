"""GET /metrics in Prometheus's text format. Everything is read at scrape time from what all processes share: the
jobs come from the database, and the counters the processes keep (HTTP requests, KV-state restores) from Redis.
So any web process answers the same, however many web processes, threads and workers (on however many machines)
there are, and nothing is lost when a process restarts. A web process adds its HTTP request counts to Redis once a
second (app/request_counts.py) rather than once per request, so another process's scrape sees them up to a second
late. With METRICS_TOKEN set, a scrape must send it as a bearer token."""

import hmac
from collections import Counter

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from redis import Redis, RedisError
from sqlalchemy import case, func, select

from app import progress
from app.errors import APIError
from app.extensions import current, db
from app.models import Job
from app.request_counts import HTTP_KEY, RequestCounts

# A client may send any method name and any path: each would make a series of its own forever, so the methods
# outside this list count as "other", and paths no route matches as "unmatched".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RESTORES_KEY = "llamalith:metrics:kv_restores"  # hash: model -> prompts started from a kept KV state
DURATION_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)  # seconds
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def init_app(app: Flask) -> None:
    app.request_counts = RequestCounts(app.redis)

    @app.after_request
    def count_request(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        method = request.method if request.method in METHODS else "other"
        current().request_counts.add(f"{method} {route} {response.status_code}")
        return response

    app.add_url_rule(app.settings.base_path + "/metrics", "metrics", scrape)


def count_restores(redis: Redis, model: str, restores: int) -> None:
    if restores:
        try:
            redis.hincrby(RESTORES_KEY, model, restores)
        except RedisError:
            pass


def scrape() -> Response:
    token = current().settings.metrics_token
    scheme, _, sent = request.headers.get("Authorization", "").strip().partition(" ")
    if token and not (scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), token.encode())):
        raise APIError(401, "unauthorized", "send METRICS_TOKEN as 'Authorization: Bearer <token>'")
    current().request_counts.flush()  # this process's own requests are counted up to this one
    registry = CollectorRegistry()
    registry.register(_Collector())
    try:
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
    finally:
        db.session.remove()


class _Collector:
    def collect(self):
        yield from _job_counts()
        yield from _histograms()
        yield from _from_redis()

    def describe(self):
        return []  # collected at scrape time only


def _job_counts():
    jobs_now = GaugeMetricFamily("llamalith_jobs", "Jobs by model and status", labels=["model", "status"])
    tokens = {"prompt": Counter(), "completion": Counter()}
    for model, status, count, prompt, completion in db.session.execute(
            select(Job.model, Job.status, func.count(), func.sum(Job.prompt_tokens), func.sum(Job.completion_tokens))
            .group_by(Job.model, Job.status)):
        jobs_now.add_metric([model, status], count)
        tokens["prompt"][model] += prompt or 0
        tokens["completion"][model] += completion or 0
    yield jobs_now
    for kind, per_model in tokens.items():
        family = CounterMetricFamily(f"llamalith_{kind}_tokens", f"{kind.capitalize()} tokens of ended jobs",
                                     labels=["model"])
        for model, total in per_model.items():
            family.add_metric([model], total)
        yield family
    depth = GaugeMetricFamily("llamalith_queue_depth", "Queued jobs by model and priority", labels=["model", "priority"])
    for (model, priority), count in progress.queue_depths().items():
        depth.add_metric([model, priority], count)
    yield depth


def _histograms():
    """Cumulative buckets of the ended jobs' generation time and time to first token, counted in SQL."""
    for name, column, bounds, help_text in (
            ("llamalith_job_duration_seconds", Job.duration_ms, DURATION_BUCKETS, "Generation time of ended jobs"),
            ("llamalith_time_to_first_token_seconds", Job.first_token_ms, FIRST_TOKEN_BUCKETS,
             "Time from a job's start to its first token")):
        family = HistogramMetricFamily(name, help_text, labels=["model"])
        counts = [func.sum(case((column <= bound * 1000, 1), else_=0)) for bound in bounds]
        for model, total, seconds, *cumulative in db.session.execute(
                select(Job.model, func.count(column), func.sum(column), *counts).where(column.is_not(None))
                .group_by(Job.model)):
            buckets = [(str(bound), count or 0) for bound, count in zip(bounds, cumulative)] + [("+Inf", total)]
            family.add_metric([model], buckets, (seconds or 0) / 1000)
        yield family


def _from_redis():
    redis = current().redis
    workers = GaugeMetricFamily("llamalith_live_workers", "Workers serving each offered model", labels=["model"])
    requests = CounterMetricFamily("llamalith_http_requests", "HTTP requests by method, route and status",
                                   labels=["method", "route", "status"])
    restores = CounterMetricFamily("llamalith_kv_restores", "Prompts that started from a kept KV state",
                                   labels=["model"])
    in_use = GaugeMetricFamily("llamalith_sequences_in_use", "Sequences decoding now, per worker and loaded model",
                               labels=["worker", "model"])
    parallel = GaugeMetricFamily("llamalith_sequences", "Sequences a worker can decode together for a loaded model "
                                 "(LLM_PARALLEL)", labels=["worker", "model"])
    try:
        for model in current().settings.offered_models:
            workers.add_metric([model], progress.live_workers(model))
            for worker in progress.sequences_of(model):
                in_use.add_metric([worker["worker"], model], worker["in_use"])
                parallel.add_metric([worker["worker"], model], worker["parallel"])
        for field, count in redis.hgetall(HTTP_KEY).items():
            requests.add_metric(field.decode().split(" ", 2), int(count))
        for model, count in redis.hgetall(RESTORES_KEY).items():
            restores.add_metric([model.decode()], int(count))
    except RedisError:
        pass  # the database's figures are still worth a scrape
    yield from (workers, in_use, parallel, requests, restores)
