"""Conversations in and out: export one as JSON or Markdown, import the JSON form (app/conversation_files.py)."""

from flask import g, request, url_for

from app import conversation_files, jobs, request_body, submissions
from app.api import bp
from app.api.routes import get_conversation
from app.errors import APIError


@bp.get("/conversations/<conversation_id>/export")
def export_conversation(conversation_id: str):
    """`conversation_id` is the owner's name for it; `?format=json` (the default) or `md`."""
    return conversation_files.download(get_conversation(conversation_id), request.args.get("format", "json"))


@bp.post("/conversations/import")
@request_body.larger_body("import_max_bytes")
def import_conversation():
    """The body is an exported file; `?conversation_id=` imports it under another id than its own."""
    session_id = request.args.get("conversation_id")
    if session_id is not None and not submissions.valid_session_id(session_id):
        raise APIError(400, "invalid_request", "conversation_id: must be 1-128 characters: letters, digits and "
                                               ". _ : @ - (e.g. 'story-123')")
    request_body.limit_body()
    file = conversation_files.parse(request.get_data())
    try:
        conversation = conversation_files.store(g.api_key.user_id, file, session_id)
    except jobs.ConversationExists as exc:
        raise APIError(409, "conversation_exists", f"{exc}; import it under another id with "
                                                   "?conversation_id=...") from None
    location = url_for("api.export_conversation", conversation_id=conversation.session_id)
    return ({"conversation_id": conversation.session_id, "title": conversation.title, "turns": len(file.turns)},
            201, {"Location": location})
