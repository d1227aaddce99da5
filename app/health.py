"""GET /healthz: the process answers (for restarts). GET /readyz: it can do its work (for load balancers and
orchestrators): the database and Redis answer, and each offered model has a live worker. No key needed for either."""

from redis import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app import progress
from app.extensions import current, db


def healthz() -> dict:
    return {"status": "ok"}


def readyz() -> tuple[dict, int]:
    problems = []
    try:
        db.session.execute(select(1))
    except SQLAlchemyError:
        problems.append("the database cannot be reached")
    finally:
        db.session.remove()
    workers = {}
    try:
        current().redis.ping()
    except RedisError:
        problems.append("Redis cannot be reached")
    else:
        workers = {model: progress.live_workers(model) for model in current().settings.offered_models}
        problems += [f"no live worker serves model '{model}'" for model, count in workers.items() if not count]
    if problems:
        return {"status": "unavailable", "problems": problems}, 503
    return {"status": "ready", "workers": workers}, 200
