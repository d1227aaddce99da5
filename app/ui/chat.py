"""Conversations: the list (search, rename, delete) and the chat page, where a prompt becomes a job.

All signed-in users see all conversations, including those created through the API: Llamalith is a
single-team, self-hosted tool, and a conversation records who started it (`user_id`) without hiding it."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import Select, func, or_, select

from app import jobs
from app.api.routes import check_fits
from app.api.schemas import CONVERSATION_ID
from app.errors import APIError
from app.extensions import db
from app.models import Conversation, Job, JobStatus, Message, Priority
from app.ui import bp, wants_fragment
from app.ui.forms import PromptForm, RenameForm
from app.ui.job_pages import Answer, answer_for, bubble_location
from app.ui.paging import paginate

CONVERSATIONS_PER_PAGE = 25
UNFINISHED = (JobStatus.QUEUED.value, JobStatus.PROCESSING.value)


@dataclass
class Turn:
    """One exchange: the prompt, then either a job's answer or (for a message without a job) its reply text."""

    prompt: str | None
    reply: str | None
    answer: Answer | None


# The list -------------------------------------------------------------------------------------------


def conversation_rows(*conditions) -> Select:
    """(Conversation, message count) rows, most recently active first. Messages are counted by one grouped
    subquery joined in, so a page costs one statement however many conversations there are."""
    counts = (select(Message.conversation_id, func.count().label("messages"))
              .group_by(Message.conversation_id).subquery())
    return (select(Conversation, func.coalesce(counts.c.messages, 0).label("messages"))
            .outerjoin(counts, counts.c.conversation_id == Conversation.id)
            .where(*conditions)
            .order_by(Conversation.updated_at.desc(), Conversation.id.desc()))


def matching(text: str):
    in_messages = (select(Message.id)
                   .where(Message.conversation_id == Conversation.id, Message.content.icontains(text, autoescape=True))
                   .exists())
    return or_(Conversation.title.icontains(text, autoescape=True), in_messages)


@bp.get("/conversations")
def conversations():
    search = request.args.get("q", "").strip()
    query = conversation_rows(matching(search)) if search else conversation_rows()
    page = paginate(db.session.execute, query, CONVERSATIONS_PER_PAGE)
    template = "partials/_conversation_list.html" if wants_fragment() else "conversations.html"
    return render_template(template, page=page, q=search)


@bp.post("/conversations/<conversation_id>/rename")
def rename(conversation_id: str):
    conversation = db.get_or_404(Conversation, conversation_id)
    form = RenameForm()
    renamed = form.validate()
    if renamed:
        conversation.title = form.title.data.strip()
        db.session.commit()
    if wants_fragment():
        row = db.session.execute(conversation_rows(Conversation.id == conversation_id)).one()
        return render_template("partials/_conversation_row.html", row=row, rename_form=form), 200 if renamed else 422
    if not renamed:
        flash(form.title.errors[0], "error")
    return redirect(url_for("ui.conversations"), 303)


@bp.get("/conversations/<conversation_id>/delete")
def confirm_delete(conversation_id: str):
    """The confirmation step for browsers without JavaScript (htmx asks with a dialog instead)."""
    return render_template("confirm_delete.html", conversation=db.get_or_404(Conversation, conversation_id))


@bp.post("/conversations/<conversation_id>/delete")
def delete(conversation_id: str):
    conversation = db.get_or_404(Conversation, conversation_id)
    stop_unfinished_jobs(conversation_id)
    db.session.delete(conversation)  # the database cascades to its messages and jobs
    db.session.commit()
    if wants_fragment():
        return ""  # the row swaps itself out
    flash(f"Deleted “{conversation.title}”.")
    return redirect(url_for("ui.conversations"), 303)


def stop_unfinished_jobs(conversation_id: str) -> None:
    """So a worker does not spend minutes on an answer nobody can see any more."""
    for job in db.session.scalars(select(Job).where(Job.conversation_id == conversation_id,
                                                    Job.status.in_(UNFINISHED)).order_by(Job.id)):
        try:
            jobs.cancel(job, wait_seconds=0)
        except jobs.AlreadyFinished:
            pass


# The chat page --------------------------------------------------------------------------------------


@bp.get("/conversations/new")
def new_conversation():
    """A fresh id; nothing is stored until the first prompt is sent (jobs.submit creates the conversation)."""
    return render_chat(f"ui-{uuid.uuid4().hex[:16]}", None, composer([]))


@bp.get("/conversations/<conversation_id>")
def chat(conversation_id: str):
    conversation = db.get_or_404(Conversation, conversation_id)
    turns = conversation_turns(conversation_id)
    return render_chat(conversation_id, conversation, composer(turns), turns)


@bp.post("/conversations/<conversation_id>/messages")
def send(conversation_id: str):
    """Without JavaScript: a plain POST, then a redirect to the answer's bubble. With htmx: the new turn
    (the prompt and a bubble that polls the job) plus a fresh composer, swapped in without a reload."""
    if not CONVERSATION_ID.match(conversation_id):
        abort(404)
    form = PromptForm()
    job = submit(conversation_id, form) if form.validate() else None
    if job is None:
        return refuse(conversation_id, form)
    if not wants_fragment():
        return redirect(bubble_location(job), 303)
    fresh = PromptForm(formdata=None, model=job.model, system_prompt=job.system_prompt)
    return (render_template("partials/_sent.html", turn=Turn(job.user_input, None, answer_for(job, None)),
                            form=fresh, conversation_id=conversation_id,
                            conversation=db.session.get(Conversation, conversation_id)),
            {"HX-Replace-Url": url_for("ui.chat", conversation_id=conversation_id)})


def submit(conversation_id: str, form: PromptForm) -> Job | None:
    """Checked like the API checks a submission; a refusal becomes an error on the form, in words."""
    system_prompt = form.system_prompt.data if (form.system_prompt.data or "").strip() else None
    try:
        check_fits(form.model.data, system_prompt, form.prompt.data, {})
    except APIError as exc:
        form.prompt.errors.append(exc.message)
        return None
    return jobs.submit(conversation_id, form.prompt.data, form.model.data, system_prompt, {},
                       priority=Priority.INTERACTIVE.value, user_id=current_user.id)


def refuse(conversation_id: str, form: PromptForm):
    if wants_fragment():
        return render_template("partials/_send_form.html", form=form, conversation_id=conversation_id, oob=True), 422
    conversation = db.session.get(Conversation, conversation_id)
    return render_chat(conversation_id, conversation, form, conversation_turns(conversation_id)), 422


def render_chat(conversation_id: str, conversation: Conversation | None, form: PromptForm,
                turns: Sequence[Turn] = ()) -> str:
    pending = any(turn.answer and not turn.answer.job.finished for turn in turns)
    return render_template("chat.html", conversation_id=conversation_id, conversation=conversation,
                           turns=turns, form=form, pending=pending)


def composer(turns: Sequence[Turn]) -> PromptForm:
    """The next prompt continues with the conversation's last model and system prompt."""
    settings = jobs.settings()
    last = next((turn.answer.job for turn in reversed(turns) if turn.answer), None)
    model = last.model if last and last.model in settings.offered_models else settings.default_model
    return PromptForm(formdata=None, model=model, system_prompt=last.system_prompt if last else None)


def conversation_turns(conversation_id: str) -> list[Turn]:
    """Turn order is job order, the user's message before the assistant's. A job still queued or running
    has no assistant message yet, and one that failed without text never gets one: its Answer shows it."""
    messages = db.session.scalars(select(Message).where(Message.conversation_id == conversation_id)
                                  .order_by(Message.job_id, Message.id))
    by_id = {job.id: job for job in db.session.scalars(select(Job).where(Job.conversation_id == conversation_id))}
    turns = []
    for job_id, group in groupby(messages, key=_turn_key):
        by_role = {message.role: message for message in group}
        if job_id in by_id:
            reply = by_role.get("assistant")
            turns.append(Turn(_content(by_role.get("user")), None, answer_for(by_id[job_id], reply)))
        else:  # messages whose job row is gone keep their text
            turns.append(Turn(_content(by_role.get("user")), _content(by_role.get("assistant")), None))
    return turns


def _turn_key(message: Message) -> int | str:
    """Messages of one job form a turn; a message whose job row is gone stands alone."""
    return message.job_id if message.job_id is not None else f"message-{message.id}"


def _content(message: Message | None) -> str | None:
    return message.content if message else None
