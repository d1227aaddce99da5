"""Batches in the browser: each batch's progress (done, failed and total lines, and the time left), its lines on
the jobs page, Cancel, and its output and error files. The list follows running batches every 2 s. Batches are
made over the API (docs/batch.md); an admin sees everyone's, read-only."""

from dataclasses import dataclass

from flask import Response, abort, flash, redirect, render_template, url_for
from sqlalchemy import select

from app import batches
from app.errors import APIError
from app.extensions import db
from app.models import Batch, StoredFile, User
from app.ui import bp, owned_or_404, viewable_or_404, visible, wants_fragment
from app.ui.paging import paginate

BATCHES_PER_PAGE = 20


@dataclass
class Progress:
    batch: Batch
    owner: str | None
    counts: dict[str, int]
    eta_seconds: float | None

    @property
    def ended(self) -> int:
        return self.counts["completed"] + self.counts["failed"]


@bp.get("/batches")
def batches_page():
    query = (select(Batch, User.name).outerjoin(User, User.id == Batch.user_id).where(visible(Batch.user_id))
             .order_by(Batch.created_at.desc(), Batch.id.desc()))
    page = paginate(db.session.execute, query, BATCHES_PER_PAGE)
    rows = [progress(batch, owner) for batch, owner in page.items]
    template = "partials/_batches_table.html" if wants_fragment() else "batches.html"
    return render_template(template, page=page, rows=rows,
                           active=any(row.batch.status in batches.RUNNING for row in rows))


def progress(batch: Batch, owner: str | None) -> Progress:
    counts = batches.counts(batch)
    running = batch.status in batches.RUNNING
    return Progress(batch, owner, counts, batches.eta_seconds(batch, counts) if running else None)


@bp.post("/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str):
    batch = owned_or_404(db.session.get(Batch, batch_id))
    try:
        batches.cancel(batch)
    except APIError as refused:  # it ended meanwhile
        flash(refused.message, "error")
    return redirect(url_for("ui.batches_page"), 303)


@bp.get("/batches/<batch_id>/<kind>.jsonl")
def batch_file(batch_id: str, kind: str):
    """The batch's `input`, `output` or `errors` file."""
    batch = viewable_or_404(db.session.get(Batch, batch_id))
    file_id = {"input": batch.input_file_id, "output": batch.output_file_id, "errors": batch.error_file_id}.get(kind)
    stored = db.session.get(StoredFile, file_id) if file_id else None
    if stored is None:
        abort(404)
    return Response(stored.content, mimetype="application/jsonl",
                    headers={"Content-Disposition": f'attachment; filename="{batch.id}_{kind}.jsonl"'})
