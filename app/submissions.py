"""The rules a prompt must pass before it becomes a job, and the limits of what it may carry. A refusal is a
`Refused` with a machine code and an HTTP status; each face turns it into its own answer (JSON error, OpenAI's error
object, a message on the form). The one path that applies these rules for every face is app/intake.py."""

import re
from datetime import timedelta

from sqlalchemy import bindparam, func, select, update

from app import webhooks
from app.extensions import current, db
from app.llm import ContextTooLong, ModelLoadError, check_fits
from app.models import ApiKey, Job, JobStatus, utcnow

# A session id (the client's name for a conversation; the JSON fields say `session_id` or `conversation_id`) travels
# in URLs and JSON: short, printable, no separators that need escaping.
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
MAX_INPUT_CHARS = 1_000_000
MAX_SYSTEM_PROMPT_CHARS = 100_000
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, as in the IETF draft's examples
IDEMPOTENCY_WINDOW = timedelta(hours=24)


class Refused(Exception):
    """The submission cannot become a job; `code` says why for machines, the message for people, and `status` is
    the HTTP status the API faces answer with; `param` names the field at fault, for OpenAI's error object."""

    def __init__(self, code: str, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.status, self.param = code, message, status, param


def claim_queue_room(api_key_id: int) -> None:
    """One automation cannot fill the queue for everyone: a key has at most max_queued jobs waiting (its batches'
    lines aside: they take turns with other keys' instead, app/batches.py). Runs in the transaction that adds the
    key's job, before the insert.

    The no-op UPDATE of the key's row opens that transaction with the row's lock (PostgreSQL) or the database's
    write lock (SQLite), held until the commit, so submits with one key, from any thread or web process, count
    one after another. Counting rows, rather than keeping a counter, means nothing has to be given back when a
    job starts, is cancelled or is reconciled: the count cannot drift."""
    connection = db.session.connection()
    own_limit = connection.execute(_LOCK_KEY, {"api_key_id": api_key_id}).scalar_one()
    limit = own_limit or current().settings.max_queued_per_key
    waiting = connection.scalar(_WAITING, {"api_key_id": api_key_id})
    if waiting >= limit:
        db.session.rollback()  # gives the lock back at once
        raise Refused("too_many_queued", f"this key already has {waiting} jobs waiting (its limit is {limit}); "
                                         "submit more when some have started", status=429)


_KEYS, _JOBS = ApiKey.__table__, Job.__table__
# Built once, in Core, as app/progress.py's positions: every submit runs both, and building them cost more than
# running them.
_LOCK_KEY = (update(_KEYS).where(_KEYS.c.id == bindparam("api_key_id")).values(max_queued=_KEYS.c.max_queued)
             .returning(_KEYS.c.max_queued))
_WAITING = select(func.count()).select_from(_JOBS).where(
    _JOBS.c.api_key_id == bindparam("api_key_id"), _JOBS.c.status == JobStatus.QUEUED.value, _JOBS.c.batch_id.is_(None))


def valid_session_id(value: str) -> bool:
    return SESSION_ID.fullmatch(value) is not None


def whole_number(value: str, low: int, high: int) -> int | None:
    """A query parameter's number from `low` to `high`, or None. ASCII digits only: str.isdigit() takes "²" and
    int() then fails, int() itself takes "١٢"."""
    if re.fullmatch(r"[0-9]{1,9}", value) is None or not low <= int(value) <= high:
        return None
    return int(value)


def valid_text(text: str) -> bool:
    """JSON can carry lone surrogates (\\ud800), which no database or model can take."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check(model: str | None, system_prompt: str | None, user_input: str, overrides: dict) -> tuple[str, str | None]:
    """The model to use and the system prompt the job records: the model's default when none is given
    (an empty string asks for none). Refuses an unknown model, or an input that cannot fit even without history."""
    settings = current().settings
    model = model or settings.default_model
    if model not in settings.offered_models:
        # OpenAI's status and code, which its SDKs turn into NotFoundError; the same on every face.
        raise Refused("model_not_found", f"Unknown model '{model}'; available: {', '.join(settings.offered_models)}.",
                      status=404, param="model")
    if system_prompt is None:
        system_prompt = settings.models[model].system_prompt
    max_tokens = settings.params_for(model, overrides).max_tokens
    try:
        check_fits(current().tokenizers.get(model), system_prompt, user_input, max_tokens, settings.safety_margin)
    except ContextTooLong as exc:
        raise Refused("context_length_exceeded", str(exc)) from None
    except ModelLoadError as exc:
        raise Refused("model_unavailable", str(exc), status=503) from None
    return model, system_prompt or None


def replayed(api_key: ApiKey, idempotency: tuple[str, str]) -> Job | None:
    """The job an earlier request with this key's Idempotency-Key made within 24 h; the same key with a different
    request is refused. After 24 h the key is free again."""
    key, digest = idempotency
    job = db.session.scalar(select(Job).where(Job.api_key_id == api_key.id, Job.idempotency_key == key))
    if job is None:
        return None
    if job.created_at < utcnow() - IDEMPOTENCY_WINDOW:
        job.idempotency_key = None
        db.session.commit()
        return None
    if job.request_digest != digest:
        raise Refused("idempotency_key_reused", f"Idempotency-Key '{key}' was used for a different request "
                                                f"(job {job.id}) in the last 24 hours", status=409)
    return job


def check_callback(api_key: ApiKey, url: str | None) -> None:
    """A callback URL the server may call, for a key that can sign it."""
    if url is None:
        return
    if api_key.webhook_secret is None:
        raise Refused("callback_not_allowed", "this API key was made before webhooks existed and has no secret to "
                                              "sign them; create a new key")
    try:
        webhooks.check_url(url)
    except webhooks.CallbackRefused as exc:
        raise Refused(exc.code, str(exc)) from None
