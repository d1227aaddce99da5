"""Conversations in and out of the UI: the chat page's Export links and the conversations page's Import form (the
file format is app/conversation_files.py)."""

import uuid

from flask import abort, flash, redirect, request, url_for
from flask_login import current_user

from app import conversation_files, jobs, request_body
from app.extensions import csrf, db
from app.models import Conversation
from app.submissions import Refused
from app.ui import bp, viewable_or_404


@bp.get("/conversations/<conversation_id>/export")
def export(conversation_id: str):
    """Whoever may see a conversation may export it: its owner, and admins."""
    conversation = viewable_or_404(db.session.get(Conversation, conversation_id))
    try:
        return conversation_files.download(conversation, request.args.get("format", "json"))
    except Refused as refused:
        abort(400, refused.message)


@bp.post("/conversations/import")
@csrf.exempt  # checked below instead, once the request may be as large as an import
@request_body.larger_body("import_max_bytes")
def import_conversation():
    """A plain form: the imported conversation opens, or the list says in words why the file was not imported."""
    try:
        request_body.limit_body()
    except Refused as refused:
        abort(413, refused.message)
    csrf.protect()
    try:
        file = conversation_files.parse(uploaded())
        conversation = imported(file)
    except Refused as refused:
        flash(f"Not imported: {refused.message}", "error")
        return redirect(url_for("ui.conversations"), 303)
    turns = len(file.turns)
    flash(f"Imported “{conversation.title or conversation.session_id}” ({turns} turn{'s' if turns != 1 else ''}).")
    return redirect(url_for("ui.chat", conversation_id=conversation.id), 303)


def uploaded() -> bytes:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise Refused("invalid_request", "choose a file exported from Llamalith (JSON) first")
    return upload.read()


def imported(file: conversation_files.ConversationFile) -> Conversation:
    """Under the file's own id, or, when the user has a conversation with that id already (it is a copy of one of
    theirs), beside it under a new one."""
    try:
        return conversation_files.store(current_user.id, file)
    except jobs.ConversationExists:
        return conversation_files.store(current_user.id, file, f"ui-{uuid.uuid4().hex[:16]}")
