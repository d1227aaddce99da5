"""OpenAI's Files and Batch APIs: /v1/files and /v1/batches, over app/batches.py. Every file and batch belongs to the
key's user; another user's is a 404."""

from flask import Response, g, request
from sqlalchemy import select

from app import batches, request_body, submissions
from app.errors import APIError
from app.extensions import db
from app.models import Batch, StoredFile
from app.v1 import bp

MAX_METADATA = 16
PAGE = 20  # batches per page unless `limit` says otherwise (1-100)


# Files -------------------------------------------------------------------------------------------------------


@bp.post("/files")
@request_body.larger_body("batch_file_max_bytes", "file_too_large")
def upload_file():
    """multipart/form-data with `file` and `purpose=batch`; up to BATCH_FILE_MAX_BYTES."""
    request_body.limit_body()  # a refusal is answered in OpenAI's shape app-wide (app/errors.py)
    if request.form.get("purpose") != "batch":
        raise APIError(400, "invalid_request", "purpose must be 'batch'", param="purpose")
    upload = request.files.get("file")
    if upload is None:
        raise APIError(400, "invalid_request", "a multipart field 'file' is required", param="file")
    name = (upload.filename or "batch.jsonl")[:255]
    if not submissions.valid_text(name):
        name = "batch.jsonl"
    return batches.file_json(batches.store_file(g.api_key.user_id, "batch", name, upload.read()))


@bp.get("/files")
def list_files():
    query = select(StoredFile).where(StoredFile.user_id == g.api_key.user_id).order_by(StoredFile.created_at.desc())
    if purpose := request.args.get("purpose"):
        if purpose not in batches.FILE_PURPOSES:  # no file has it (and a NUL in it never reaches the database)
            return {"object": "list", "data": [], "has_more": False}
        query = query.where(StoredFile.purpose == purpose)
    return {"object": "list", "data": [batches.file_json(stored) for stored in db.session.scalars(query)],
            "has_more": False}


@bp.get("/files/<file_id>")
def get_file(file_id: str):
    return batches.file_json(batches.owned_file(g.api_key.user_id, file_id))


@bp.get("/files/<file_id>/content")
def file_content(file_id: str):
    stored = batches.owned_file(g.api_key.user_id, file_id)
    return Response(stored.content, mimetype="application/jsonl",
                    headers={"Content-Disposition": f'attachment; filename="{stored.id}.jsonl"'})


@bp.delete("/files/<file_id>")
def delete_file(file_id: str):
    stored = batches.owned_file(g.api_key.user_id, file_id)
    db.session.delete(stored)
    db.session.commit()
    return {"id": file_id, "object": "file", "deleted": True}


# Batches -----------------------------------------------------------------------------------------------------


@bp.post("/batches")
def create_batch():
    body = request_body.json_body()
    if not isinstance(body, dict):
        raise APIError(400, "invalid_json", "the request body must be a JSON object")
    unknown = sorted(body.keys() - {"input_file_id", "endpoint", "completion_window", "metadata"})
    if unknown:
        raise APIError(400, "invalid_request", f"unknown field '{unknown[0]}'", param=unknown[0])
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(name), str):
            raise APIError(400, "invalid_request", f"{name} is required (a string)", param=name)
    batch = batches.create(g.api_key, body["input_file_id"], body["endpoint"], body["completion_window"],
                           checked_metadata(body.get("metadata")))
    return batches.batch_json(batch)


def checked_metadata(metadata) -> dict[str, str] | None:
    """OpenAI's rule: at most 16 pairs of text, keys up to 64 characters and values up to 512."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA or not all(
            isinstance(key, str) and isinstance(value, str) and len(key) <= 64 and len(value) <= 512
            and submissions.valid_text(key + value) for key, value in metadata.items()):
        raise APIError(400, "invalid_request", "metadata must be at most 16 text pairs (keys up to 64 characters, "
                                               "values up to 512)", param="metadata")
    return metadata


@bp.get("/batches")
def list_batches():
    """Newest first; `after` is the id of the last batch of the previous page."""
    limit = submissions.whole_number(request.args.get("limit", str(PAGE)), 1, 100)
    if limit is None:
        raise APIError(400, "invalid_request", "limit must be a whole number from 1 to 100", param="limit")
    query = select(Batch).where(Batch.user_id == g.api_key.user_id).order_by(Batch.created_at.desc(), Batch.id.desc())
    if after := request.args.get("after"):
        cursor = owned_batch(after)
        query = query.where((Batch.created_at < cursor.created_at)
                            | ((Batch.created_at == cursor.created_at) & (Batch.id < cursor.id)))
    found = db.session.scalars(query.limit(limit + 1)).all()
    page = found[:limit]
    return {"object": "list", "data": [batches.batch_json(batch) for batch in page],
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
            "has_more": len(found) > len(page)}


@bp.get("/batches/<batch_id>")
def get_batch(batch_id: str):
    return batches.batch_json(owned_batch(batch_id))


@bp.post("/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str):
    return batches.batch_json(batches.cancel(owned_batch(batch_id)))


def owned_batch(batch_id: str) -> Batch:
    batch = db.session.get(Batch, batch_id) if batches.STORED_ID.fullmatch(batch_id) else None
    if batch is None or batch.user_id != g.api_key.user_id:
        raise APIError(404, "not_found", f"no batch with id '{batch_id}'", param="batch_id")
    return batch
