"""The job core: a job's life from submit to its end, one idea per module, as rq's own `job.py`, `queue.py` and
`registry.py` are (docs/architecture.md maps where a request goes, file by file).

- lifecycle: every status change, through the one `transition`: submit, regenerate, claim, finish, hand_back, cancel
- queues: Redis's side: queue names, rq ids, enqueue with conversation affinity, hand-over, held batch lines let in
  by turns, what Redis still holds
- store: writing jobs, conversations and messages in short transactions, one writer at a time on SQLite
- running: the RQ entry point (`app.jobs.run`, the name every enqueued job carries) and generation
- reconciler: heartbeats, lost workers, expiry, enqueueing again what Redis lost
- imported: conversations whose turns ended elsewhere (an imported file)

Above it, app/batch_lines.py stores a batch's lines, cancels them and settles the batch. Below it, app/progress.py
(where a job stands) and app/job_views.py (its JSON): webhooks and metrics, which the core calls, show those, so
inside this package they would import it back.

The names callers use are re-exported here (`from app import jobs; jobs.submit(...)`), as rq's `__init__` does."""

from app.jobs.imported import ConversationExists, add_ended
from app.jobs.lifecycle import (AlreadyFinished, AlreadySubmitted, NotRegenerable, QueueUnavailable, cancel, regenerate,
                                submit)
from app.jobs.queues import (RQ_PREFIX, enqueue, hand_over, interactive_waiting, queue_name, release_lines, rq_id,
                             worker_queues)
from app.jobs.reconciler import HEARTBEAT_INTERVAL, heartbeat, reconcile
from app.jobs.running import run

__all__ = ["ConversationExists", "add_ended",
           "AlreadyFinished", "AlreadySubmitted", "NotRegenerable", "QueueUnavailable", "cancel", "regenerate",
           "submit",
           "RQ_PREFIX", "enqueue", "hand_over", "interactive_waiting", "queue_name", "release_lines", "rq_id",
           "worker_queues",
           "HEARTBEAT_INTERVAL", "heartbeat", "reconcile",
           "run"]
