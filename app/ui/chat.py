"""Conversations: the list (search, rename, delete) and the chat page, where a prompt becomes a job.

Each user sees and changes only their own conversations (made here or through any of their API keys); another
user's is a 404. An admin also sees everyone else's, read-only and marked with the owner's name."""

import uuid
from collections.abc import Sequence

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import Select, func, or_, select

from app import intake, jobs, prompt_templates, submissions
from app.extensions import current, db
from app.intake import Submission
from app.llm import Turn
from app.models import Conversation, Job, JobStatus, Message, Priority, User, conversation_turns
from app.ui import bp, owned_or_404, viewable_or_404, visible, wants_fragment
from app.ui.answers import Answer, answers_for, bubble_location
from app.ui.forms import ADVANCED, PromptForm, RenameForm
from app.ui.job_pages import stored_variables
from app.ui.paging import paginate

CONVERSATIONS_PER_PAGE = 25
UNFINISHED = (JobStatus.QUEUED.value, JobStatus.PROCESSING.value)

# The list -------------------------------------------------------------------------------------------


def conversation_rows(*conditions) -> Select:
    """(Conversation, message count, owner's name) rows the user may see, most recently active first. Messages
    are counted by one grouped subquery joined in, so a page costs one statement however many there are."""
    counts = (select(Message.conversation_id, func.count().label("messages"))
              .group_by(Message.conversation_id).subquery())
    return (select(Conversation, func.coalesce(counts.c.messages, 0).label("messages"), User.name)
            .outerjoin(counts, counts.c.conversation_id == Conversation.id)
            .outerjoin(User, User.id == Conversation.user_id)
            .where(visible(Conversation.user_id), *conditions)
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
    conversation = owned_or_404(db.session.get(Conversation, conversation_id))
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
    return render_template("confirm_delete.html",
                           conversation=owned_or_404(db.session.get(Conversation, conversation_id)))


@bp.post("/conversations/<conversation_id>/delete")
def delete(conversation_id: str):
    conversation = owned_or_404(db.session.get(Conversation, conversation_id))
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
        except (jobs.AlreadyFinished, jobs.QueueUnavailable):
            pass  # it ended meanwhile, or it will end unseen: its row goes with the conversation


# The chat page --------------------------------------------------------------------------------------


@bp.get("/conversations/new")
def new_conversation():
    """A fresh id; nothing is stored until the first prompt is sent (jobs.submit creates the conversation)."""
    return render_chat(f"ui-{uuid.uuid4().hex[:16]}", None, composer(None))


@bp.get("/conversations/<conversation_id>")
def chat(conversation_id: str):
    conversation = viewable_or_404(db.session.get(Conversation, conversation_id))
    turns, answers = conversation_view(conversation_id)
    last = answers[turns[-1].job_id].job if turns and turns[-1].job_id in answers else None
    return render_chat(conversation_id, conversation, composer(last), turns, answers)


@bp.post("/conversations/<conversation_id>/messages")
def send(conversation_id: str):
    """Without JavaScript: a plain POST, then a redirect to the answer's bubble. With htmx: the new turn
    (the prompt and a bubble that polls the job) plus a fresh composer, swapped in without a reload."""
    if not submissions.valid_session_id(conversation_id):  # a new conversation's id is its session id too
        abort(404)
    existing = db.session.get(Conversation, conversation_id)
    session_id = owned_or_404(existing).session_id if existing else conversation_id
    form = PromptForm()
    job = submit(conversation_id, session_id, form) if form.validate() else None
    if job is None:
        return refuse(conversation_id, form)
    if not wants_fragment():
        return redirect(bubble_location(job), 303)
    turn = Turn(job.user_input, None, job.id)
    return (render_template("partials/_sent.html", turn=turn, answers=answers_for([job], job.id), form=composer(job),
                            conversation_id=conversation_id,
                            conversation=db.session.get(Conversation, conversation_id)),
            {"HX-Replace-Url": url_for("ui.chat", conversation_id=conversation_id)})


def submit(conversation_id: str, session_id: str, form: PromptForm) -> Job | None:
    """Through the same path as the API's submissions; a refusal becomes an error on the form, in words."""
    reference = form.prompt_template.data or None
    system_prompt = form.system_prompt.data if (form.system_prompt.data or "").strip() else None
    try:
        job, _ = intake.submit(Submission(
            owner=current_user.id, user_input=form.prompt.data, session_id=session_id, model=form.model.data,
            system_prompt=system_prompt, params=form.overrides(), priority=Priority.INTERACTIVE.value,
            prompt_template=reference, variables=form.variables if reference else None,
            conversation_id=conversation_id))
    except submissions.Refused as refused:
        form.prompt.errors.append(refused.message)
        form.refused = refused.code
        return None
    return job


def refuse(conversation_id: str, form: PromptForm):
    """422 with the form and its errors; `data-refused` on it names the code the API faces would answer with."""
    form.refused = form.refused or "invalid_request"  # what the form's own validators refuse
    if wants_fragment():
        return render_template("partials/_send_form.html", form=form, conversation_id=conversation_id, oob=True), 422
    conversation = db.session.get(Conversation, conversation_id)
    return render_chat(conversation_id, conversation, form, *conversation_view(conversation_id)), 422


def render_chat(conversation_id: str, conversation: Conversation | None, form: PromptForm,
                turns: Sequence[Turn] = (), answers: dict[int, Answer] | None = None) -> str:
    answers = answers or {}
    pending = any(not answer.job.finished for answer in answers.values())
    return render_template("chat.html", conversation_id=conversation_id, conversation=conversation,
                           turns=turns, answers=answers, form=form, pending=pending)


def composer(last: Job | None) -> PromptForm:
    """The next prompt continues with the last job's model, system prompt (unless it was the model's default, or
    came from a template: then the same template version, by name while it is the latest, and the same variables)
    and advanced settings."""
    settings = current().settings
    if last is None or last.model not in settings.offered_models:
        return PromptForm(formdata=None, model=settings.default_model, variables={})
    # Numbers only: what a row holds is shown in the form as it is, and an older version may have stored anything.
    advanced = {name: last.params[name] for name in ADVANCED if isinstance(last.params.get(name), int | float)}
    if last.prompt_template:
        reference = prompt_templates.reference(last.prompt_template)
        return PromptForm(formdata=None, model=last.model, prompt_template=reference,
                          variables=stored_variables(last), **advanced)
    system_prompt = last.system_prompt if last.system_prompt != settings.models[last.model].system_prompt else None
    return PromptForm(formdata=None, model=last.model, system_prompt=system_prompt, variables={}, **advanced)


def conversation_view(conversation_id: str) -> tuple[list[Turn], dict[int, Answer]]:
    """The turns, and a bubble for each turn that has a job (queued, running, or ended with or without text)."""
    turns = conversation_turns(conversation_id)
    found = db.session.scalars(select(Job).where(Job.id.in_([turn.job_id for turn in turns if turn.job_id])))
    latest = max((turn.job_id for turn in turns if turn.job_id), default=None)
    return turns, answers_for(found, latest)
