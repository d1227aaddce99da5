"""The worker: python worker.py [--supervise] [--models A,B | A B ...]  (default: every offered model).

Loads its models once and keeps them warm; runs jobs in-process (rq's SimpleWorker: no fork, so the
KV cache survives between turns and OpenMP is never forked), several at once: one rq worker per slot, each in a
thread of its own (the first in the main thread, where signals arrive), all feeding the models' batches
(app/llm/engine.py, app/worker_slots.py); keeps its running jobs' heartbeats and reconciles the queue with the
database in a background thread, and delivers webhooks in a few others (app/webhooks.py).
With --supervise (the Procfile), it runs as a child process that is started again whenever it dies, so one crash
cannot stop the whole stack, and that ends when its supervisor does.
"""

import argparse
import gc
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time

from redis import Redis, RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.timeouts import TimerDeathPenalty
from sqlalchemy import select

from app import affinity, batch_lines, batches, create_app, jobs, logs, webhooks, worker_slots
from app.extensions import Llamalith, db
from app.llm import ModelCache, ModelLoadError
from app.models import Job, Priority
from app.orphans import STOP_SIGNALS, end_with_parent
from config import ConfigError, load_settings

log = logging.getLogger("llamalith.worker")

SUPERVISOR = "LLAMALITH_SUPERVISOR"  # the supervisor's pid, in its child's environment
ORPHAN_GRACE = 30  # seconds an orphaned worker has for a warm stop before it exits regardless
PRIORITY_CHECK = 0.05  # seconds between looks for interactive turns waiting while batch lines fill every slot


class LlamalithWorker(SimpleWorker):
    """Runs each job inside its own app context, so the job's database session ends with it. Listens on its own
    queue first (conversation affinity, app/affinity.py) and says whether it has a free slot. Outside the main
    thread it installs no signal handlers, times jobs out with a timer, and sees a stop between one-second waits for
    a job, which a stop also ends at once (worker_slots.wake)."""

    def __init__(self, models: list[str], app: Llamalith, connection: Redis):
        self.in_main_thread = threading.current_thread() is threading.main_thread()  # rq's __init__ asks already
        own = Queue(affinity.worker_queue(app.worker_name), connection=connection)
        # rq's own name stays random: after a Redis outage, a new rq worker starts while the old one's key lives on.
        super().__init__([own, *jobs.worker_queues(models, connection)], connection=connection)
        self.app = app
        self.stopping = False
        if not self.in_main_thread:
            self.death_penalty_class = TimerDeathPenalty

    @property
    def dequeue_timeout(self) -> int:
        return super().dequeue_timeout if self.in_main_thread else 1

    def _install_signal_handlers(self):
        if self.in_main_thread:
            super()._install_signal_handlers()

    @property
    def should_run_maintenance_tasks(self) -> bool:
        # rq asks this before each wait for a job (every dequeue_timeout) and never holding one: the one place a
        # slot outside the main thread can end its loop on a stop without losing a job it took.
        if not self.in_main_thread and self.app.stopping.is_set():
            raise StopRequested()
        return super().should_run_maintenance_tasks

    def request_stop(self, signum, frame):
        # The running jobs see this between tokens and go back to the queue (jobs.run), so a stop is quick. Setting
        # it takes the Event's lock: a second stop signal meanwhile (Ctrl-C and a supervisor's SIGTERM) waits until
        # it is set, instead of running this handler inside it and waiting for that lock forever.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self.app.stopping.set()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.stopping = True
        super().request_stop(signum, frame)

    def perform_job(self, job, queue, *args, **kwargs):
        job_id = model_job_id(job.id)
        batch = queue.name.endswith(":" + Priority.BATCH.value)
        priority = Priority.BATCH.value if batch else Priority.INTERACTIVE.value
        with self.app.app_context():
            if job_id is not None and self.app.worker_slots.take(job_id, priority):
                busy(self.app)
            try:
                return super().perform_job(job, queue, *args, **kwargs)
            finally:
                handed_back = job_id is not None and self.app.worker_slots.leave(job_id)
                after_job(self.app, job.id, handed_back)


def after_job(app: Llamalith, rq_job_id: str, handed_back: bool = False) -> None:
    """Whatever the job was and however it ended, this never raises: rq takes an exception here for a crash of its
    own loop and quits it (31 restarts in one run, each leaving a ghost worker behind). A job `handed_back` to the
    queue (jobs.hand_back) goes to the front of its queue now that rq has recorded the end of its run."""
    logs.request_id.set(None)  # jobs.run set the job's own
    try:
        if handed_back:  # if Redis fails here, the row is queued and the reconciler enqueues it
            jobs.enqueue(db.session.get(Job, model_job_id(rq_job_id)), at_front=True)
        affinity.mark_idle(app.redis, app.worker_name)
        settle_batch(rq_job_id)
    except Exception:  # the maintenance thread settles batches (batches.maintain) and marks idle again
        log.exception("after job %s", rq_job_id)


def settle_batch(rq_job_id: str) -> None:
    """After a batch's line: end the batch if that was its last (app/batch_lines.py)."""
    job_id = model_job_id(rq_job_id)
    if job_id is not None:
        batch_id = db.session.scalar(select(Job.batch_id).where(Job.id == job_id))
        if batch_id:
            batch_lines.settle(batch_id)


def model_job_id(rq_job_id: str) -> int | None:
    """The job of a model job's rq id (jobs.rq_id); None for anything else in the queues."""
    number = rq_job_id.removeprefix(jobs.RQ_PREFIX)
    return int(number) if number.isascii() and number.isdigit() and number != rq_job_id else None


def busy(app: Llamalith) -> None:
    """Stop being chosen for turns, and pass on those already waiting here (they never wait for a busy worker)."""
    affinity.mark_busy(app.redis, app.worker_name)
    jobs.hand_over(app.worker_name)


def prepare(app: Llamalith, models: list[str], name: str | None = None, cache: ModelCache | None = None) -> ModelCache:
    """Load the served models (up to the cache's capacity) before taking any job."""
    settings = app.settings
    cache = cache or ModelCache(settings.models, capacity=settings.max_loaded_models, threads=settings.threads,
                                state_bytes=settings.kv_cache_mb * 1024 * 1024, parallel=settings.parallel,
                                exact=settings.parallel_exact)
    for key in models[: settings.max_loaded_models]:
        try:
            cache.get(key)
        except ModelLoadError as exc:  # its jobs will end as errors saying so; other models still work
            log.error("%s", exc)
    app.models = cache
    app.worker_slots = worker_slots.WorkerSlots(max(cache.parallel_of(key) for key in models))
    app.stopping.clear()
    # host, a random tag and pid: containers on one host network share the hostname and all run as pid 1, and each
    # worker needs a name of its own (its liveness key, its affinity queue).
    app.worker_name = name or f"{socket.gethostname()}:{secrets.token_hex(3)}:{os.getpid()}"
    return cache


def maintain(app: Llamalith, stop: threading.Event) -> None:
    """Heartbeat the running job every few seconds; reconcile at start and every RECONCILE_INTERVAL."""
    interval = app.settings.reconcile_interval
    next_reconcile = 0.0
    while not stop.is_set():
        with app.app_context():
            try:
                jobs.heartbeat(app.worker_name)
                affinity.stay_idle(app.redis, app.worker_name)
                if time.monotonic() >= next_reconcile:
                    counts = jobs.reconcile()
                    batches.maintain()
                    if any(counts.values()):
                        log.info("reconciled: %s", counts)
                    next_reconcile = time.monotonic() + interval
            except RedisError as exc:  # Redis restarting, or stopped first at the stack's stop: one line
                log.warning("maintenance waits for Redis (%s)", exc)
            except Exception:  # keep maintaining: the next round may succeed (e.g. the database is back)
                log.exception("maintenance round failed")
        stop.wait(min(jobs.HEARTBEAT_INTERVAL, interval))


def announce(app: Llamalith, models: list[str], stop: threading.Event) -> None:
    """Say that this worker is alive, and what it serves, every ANNOUNCE_INTERVAL (app/affinity.py): in a thread of
    its own, so that a long maintenance round never makes it look dead."""
    while not stop.is_set():
        try:
            affinity.announce(app.redis, app.worker_name, models, sequences_in_use(app), app.worker_slots.sequences())
        except RedisError:
            pass  # serve() says that Redis is gone; the next announcement restores the key
        stop.wait(affinity.ANNOUNCE_INTERVAL)


def sequences_in_use(app: Llamalith) -> dict[str, tuple[int, int]]:
    return {key: (model.engine.in_use, model.engine.parallel) for key, model in list(app.models.loaded.items())}


def serve(app: Llamalith, models: list[str], burst: bool = False) -> None:
    """Work until SIGTERM/SIGINT (a warm stop: running jobs go back to the queue); survive Redis outages."""
    others = [threading.Thread(target=work, args=(app, models, burst), name=f"slot-{slot}", daemon=True)
              for slot in range(1, app.worker_slots.count)]
    for thread in others:
        thread.start()
    work(app, models, burst)
    if app.stopping.is_set():
        try:
            worker_slots.wake(app.redis, app.worker_name)
        except RedisError:
            pass  # the slots see the stop at their next timeout
    for thread in others:
        thread.join()
    with app.app_context():
        try:
            busy(app)
        except RedisError as exc:  # the reconciler will move them
            log.warning("could not pass on this worker's waiting turns (%s)", exc)


def work(app: Llamalith, models: list[str], burst: bool) -> None:
    """One slot: an rq worker that takes one job at a time, until a stop."""
    connection = worker_slots.slot_redis(app.settings.redis_address, app.worker_name)
    while True:
        worker = LlamalithWorker(models, app, connection)
        try:
            worker_slots.name_slot(connection)
            affinity.mark_idle(app.redis, app.worker_name)
            worker.work(burst=burst, logging_level="INFO")
        except RedisError as exc:
            log.warning("lost Redis (%s); reconnecting", exc)
        if burst or worker.stopping or app.stopping.is_set():
            break
        time.sleep(1)


def make_room(app: Llamalith, models: list[str], stop: threading.Event) -> None:
    """While every slot is taken and some by batch lines, let interactive turns waiting in Redis in: the newest
    lines give their places up (app/worker_slots.py). Twenty checks a second, each one pipeline of LLENs and only
    while batch work fills every slot: a turn waits for a step, not a line."""
    while not stop.wait(PRIORITY_CHECK):
        try:
            if app.worker_slots.full_of_batch_work():
                with app.app_context():
                    waiting = jobs.interactive_waiting(models, app.worker_name)
                for job_id in app.worker_slots.make_room(waiting) if waiting else []:
                    log.info("job %s gives its place up to an interactive turn", job_id)
        except RedisError:
            pass  # serve() says that Redis is gone


def served_models(argv: list[str]) -> list[str]:
    """The model keys named as `--models a,b` and/or as arguments."""
    parser = argparse.ArgumentParser(prog="worker.py", description="Run jobs for the named models.")
    parser.add_argument("--models", default="", help="comma-separated model keys")
    parser.add_argument("keys", nargs="*", help="model keys, as an alternative to --models")
    args = parser.parse_args(argv)
    return [key for key in args.models.split(",") if key] + args.keys


def main(argv: list[str]) -> None:
    supervisor = follow_supervisor()
    try:
        app = create_app()
    except ConfigError as exc:
        sys.exit(f"llamalith: {exc}")
    settings = app.settings
    models = served_models(argv) or settings.offered_models
    unknown = [key for key in models if key not in settings.models]
    if unknown:
        sys.exit(f"llamalith: worker asked to serve unconfigured model(s): {', '.join(unknown)}")
    prepare(app, models)
    gc.freeze()  # start-up's objects and the models' live as long as the process: see wsgi.py
    if supervisor:
        threading.Thread(target=watch_supervisor, args=(app, supervisor), name="supervisor", daemon=True).start()
    stop = threading.Event()
    announcing = threading.Thread(target=announce, args=(app, models, stop), name="announce", daemon=True)
    announcing.start()
    threading.Thread(target=maintain, args=(app, stop), name="maintain", daemon=True).start()
    threading.Thread(target=make_room, args=(app, models, stop), name="make-room", daemon=True).start()
    deliveries = webhooks.start(app, stop)
    log.info("worker %s serving %s", app.worker_name, ", ".join(models))
    serve(app, models)
    app.models.close()  # every slot has ended: nothing decodes any more
    stop.set()
    announcing.join()
    try:
        affinity.retire(app.redis, app.worker_name)
    except RedisError:
        pass  # its key expires within ALIVE_TTL
    deadline = time.monotonic() + app.settings.callback_timeout  # deliveries under way end, or are cut, by then
    for thread in deliveries:
        thread.join(max(0.0, deadline - time.monotonic()))


def follow_supervisor() -> int | None:
    """Under --supervise: make the kernel send SIGTERM (a warm stop) when the supervisor dies, even by kill -9, so
    that no orphan lives on taking jobs that a restarted stack does not know about. Returns the supervisor's pid,
    which `watch_supervisor` also watches (where prctl is missing, or its signal was missed)."""
    if SUPERVISOR not in os.environ:
        return None
    supervisor = int(os.environ[SUPERVISOR])
    end_with_parent()
    if os.getppid() != supervisor:  # it died before prctl took effect
        sys.exit("llamalith: the worker's supervisor has ended")
    return supervisor


def watch_supervisor(app: Llamalith, supervisor: int) -> None:
    while os.getppid() == supervisor:
        time.sleep(1)
    if not app.stopping.is_set():  # a second SIGTERM would make rq stop cold
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE)
    log.error("worker %s: the supervisor is gone and the warm stop did not end in %s s; exiting", app.worker_name,
              ORPHAN_GRACE)
    os._exit(1)


def supervise(argv: list[str]) -> None:
    """Run `worker.py argv` as a child and start it again whenever it dies (its job is retried by the reconciler):
    after a pause that doubles while it keeps dying within a minute, up to 30 s. SIGTERM/SIGINT are passed on,
    and the supervisor ends when the child has stopped."""
    try:
        settings = load_settings()  # a bad setting would kill every restart the same way: say so once and stop
    except ConfigError as exc:
        sys.exit(f"llamalith: {exc}")
    logs.configure(settings.log_format)
    stopping = threading.Event()
    child: subprocess.Popen | None = None

    def pass_on(signum, _frame) -> None:
        # Only the first: honcho follows a terminal's SIGINT with its own SIGTERM, and rq takes a second signal
        # as a cold stop.
        if not stopping.is_set() and child is not None and child.poll() is None:
            child.send_signal(signum)
        stopping.set()

    for signum in STOP_SIGNALS:
        signal.signal(signum, pass_on)
    pause = 1.0
    while not stopping.is_set():
        started = time.monotonic()
        # Its own session: a terminal's Ctrl-C reaches it once, through pass_on, not twice (rq's second signal
        # would be a cold stop).
        child = subprocess.Popen([sys.executable, __file__, *argv], start_new_session=True,
                                 env={**os.environ, SUPERVISOR: str(os.getpid())})
        code = child.wait()
        if stopping.is_set():
            break
        pause = 1.0 if time.monotonic() - started > 60 else min(pause * 2, 30.0)
        log.warning("worker process %s ended (exit code %s); starting a new one in %.0f s", child.pid, code, pause)
        stopping.wait(pause)
    if child is not None:
        child.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--supervise"]:
        supervise(sys.argv[2:])
    else:
        main(sys.argv[1:])
