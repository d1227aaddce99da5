"""Template filters. Model output is untrusted: Markdown is rendered with raw HTML disabled, and the result
still goes through an allowlist sanitizer, so neither a user nor a model can put script into a page."""

from datetime import datetime

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

from app.models import Job
from app.ui import bp

_markdown = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])

# What Markdown produces, minus images (a model could be talked into loading a tracking URL) and minus
# style attributes (table alignment), which a strict Content-Security-Policy would refuse anyway.
ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}


@bp.app_template_filter("markdown")
def markdown(text: str | None) -> Markup:
    html = _markdown.render(text or "")
    return Markup(nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
                            url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow"))


@bp.app_template_filter("when")
def when(moment: datetime | None, short: bool = False) -> str:
    """Times are stored as naive UTC; say so (short: in the column header) rather than guess the reader's zone."""
    if moment is None:
        return "—"
    return f"{moment:%Y-%m-%d %H:%M}" if short else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


@bp.app_template_filter("took")
def took(job: Job) -> str:
    """How long a job ran (from its start, so time spent waiting in the queue is not counted)."""
    if not (job.started_at and job.processed_at):
        return "—"
    seconds = (job.processed_at - job.started_at).total_seconds()
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60)} s"
