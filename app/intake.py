"""The one way a prompt becomes a job, whichever face it came through (/api, /v1, the chat form, regenerate, a batch's
lines): the face parses its wire format into a `Submission` and makes one call here, which checks it, honours its
Idempotency-Key and submits it, or raises `Refused`, so the same refusal has the same status and code on every face
(the table in docs/api.md).

It lives beside app/submissions.py rather than in it because app/jobs.py calls submissions (the per-key cap is
counted inside the insert's transaction) and this calls jobs: one module would import itself in a circle."""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from app import embeddings, jobs, prompt_templates, submissions
from app.models import ApiKey, Job, JobKind, Priority, PromptTemplate
from app.submissions import IDEMPOTENCY_KEY, Refused


@dataclass(frozen=True)
class Submission:
    """A prompt as any face asks for it, in no face's wire format.

    `session_id` is the client's name for the conversation (made if new); `conversation_id` is the internal id a new
    one takes (the chat page names it in its URL before it exists). `system_prompt` None means the model's default,
    "" none. `params` are only the generation settings the client sent. `history` ([user, assistant] pairs) replaces
    the conversation's stored turns in the prompt. An embedding job (`kind`) has its inputs as `user_input`, a JSON
    list of strings (app/embeddings.py), and `truncate` cuts those longer than the context instead of refusing them."""

    owner: int
    user_input: str
    session_id: str
    model: str | None = None
    system_prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    priority: str = Priority.BATCH.value
    api_key: ApiKey | None = None
    history: list[list[str | None]] | None = None
    callback_url: str | None = None
    prompt_template: str | None = None
    variables: dict[str, str] | None = None
    idempotency: tuple[str, str] | None = None
    conversation_id: str | None = None
    kind: str = JobKind.CHAT.value
    truncate: bool = False


class Checked(NamedTuple):
    """What a submission that passed every check runs with."""

    model: str
    system_prompt: str | None  # the one the job records: the model's default filled in, None for none
    template: PromptTemplate | None  # the exact version the system prompt was filled from


class Submitted(NamedTuple):
    job: Job
    replayed: bool  # the job an earlier request with the same Idempotency-Key made, not a new one


def submit(submission: Submission) -> Submitted:
    """The job for `submission`: an earlier request's with the same Idempotency-Key, else a new one, checked, stored
    and enqueued. Raises `Refused`."""
    if submission.idempotency and (earlier := _replayed(submission)):
        return Submitted(earlier, True)
    ready = check(submission)
    key = submission.api_key
    try:
        job = jobs.submit(submission.owner, submission.session_id, submission.user_input, ready.model,
                          ready.system_prompt, submission.params, priority=submission.priority,
                          api_key_id=key.id if key else None, conversation_id=submission.conversation_id,
                          history=submission.history, idempotency=submission.idempotency,
                          callback_url=submission.callback_url, prompt_template=ready.template,
                          variables=submission.variables, kind=submission.kind)
    except jobs.AlreadySubmitted:  # a concurrent request with the same Idempotency-Key won the insert
        return Submitted(_replayed(submission), True)
    return Submitted(job, False)


def check(submission: Submission) -> Checked:
    """Every rule a submission must pass before it is stored, in the order every face reports them (a batch's
    lines are checked here and stored together, app/batches.py). Raises `Refused`."""
    key = submission.api_key
    if submission.priority == Priority.INTERACTIVE.value and key is not None and not key.interactive:
        raise Refused("priority_not_allowed", "this API key may only submit batch jobs", status=403)
    if submission.kind == JobKind.EMBEDDING.value:
        inputs = json.loads(submission.user_input)
        return Checked(embeddings.check(submission.model, inputs, submission.truncate), None, None)
    template, system_prompt = prompt_templates.chosen(submission.owner, submission.prompt_template,
                                                      submission.variables, submission.system_prompt)
    model, system_prompt = submissions.check(submission.model, system_prompt, submission.user_input,
                                             submission.params)
    if submission.callback_url is not None:
        submissions.check_callback(key, submission.callback_url)
    return Checked(model, system_prompt, template)


def regenerate(job: Job) -> Job:
    """A new job for the same turn, checked as a new submission is: the model may no longer be offered, or the turn no
    longer fit its context. Raises `Refused`, or jobs.NotRegenerable for a turn that is not the last or not ended,
    or not a chat answer."""
    if job.kind != JobKind.CHAT.value:
        raise jobs.NotRegenerable("only a chat answer can be regenerated; send the embedding request again")
    submissions.check(job.model, job.system_prompt or "", job.user_input, job.params)  # "": it recorded none
    return jobs.regenerate(job)


def idempotency(header: str | None, body: Any) -> tuple[str, str] | None:
    """The request's Idempotency-Key header and a digest of its parsed body, or None without the header."""
    if header is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(header):
        raise Refused("invalid_request", "Idempotency-Key must be 1 to 200 printable ASCII characters")
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=True).encode()
    return header, hashlib.sha256(canonical).hexdigest()


def _replayed(submission: Submission) -> Job | None:
    return submissions.replayed(submission.api_key, submission.idempotency)
