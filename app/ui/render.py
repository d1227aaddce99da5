"""Template filters and globals. Model output is untrusted: Markdown is rendered with raw HTML disabled, code blocks
are highlighted by Pygments on the server, and the result still goes through an allowlist sanitizer, so neither a
user nor a model can put script into a page."""

from datetime import datetime
from functools import cache

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

from app.models import Job
from app.ui import bp
from app.ui.forms import input_bounds

_markdown = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
_spans = HtmlFormatter(nowrap=True)  # only the token spans: the block around them is ours

# What Markdown and our code blocks produce, minus images (a model could be talked into loading a tracking URL) and
# minus style attributes (table alignment), which a strict Content-Security-Policy would refuse anyway. A code block
# and a table may scroll sideways, so they take keyboard focus (tabindex 0, no other value).
ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "div", "span", "button",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
ALLOWED_CLASSES = {
    "div": {"code", "code-head"},
    "span": {"language"} | {name for name in STANDARD_TYPES.values() if name},
    "button": {"copy"},
}
_cleaner = nh3.Cleaner(tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, allowed_classes=ALLOWED_CLASSES,
                       tag_attribute_values={"button": {"type": {"button"}}, "pre": {"tabindex": {"0"}},
                                             "table": {"tabindex": {"0"}}},
                       url_schemes={"http", "https", "mailto"},
                       link_rel="noopener noreferrer nofollow")


def _code_block(_renderer, tokens, index, _options, _env) -> str:
    """A code block with its language and a copy button, highlighted when the language is one Pygments knows."""
    token = tokens[index]
    language = token.info.split()[0] if token.info.strip() else ""
    try:
        code = highlight(token.content, get_lexer_by_name(language), _spans) if language else escapeHtml(token.content)
    except ClassNotFound:
        code = escapeHtml(token.content)
    return (f'<div class="code"><div class="code-head"><span class="language">{escapeHtml(language)}</span>'
            f'<button type="button" class="copy">Copy</button></div><pre tabindex="0"><code>{code}</code></pre></div>\n')


def _table(renderer, tokens, index, options, env) -> str:
    """A table scrolls sideways inside its bubble: focusable, so a keyboard can scroll it too."""
    tokens[index].attrSet("tabindex", "0")
    return renderer.renderToken(tokens, index, options, env)


_markdown.add_render_rule("fence", _code_block)
_markdown.add_render_rule("code_block", _code_block)
_markdown.add_render_rule("table_open", _table)


@bp.app_template_filter("markdown")
def markdown(text: str | None) -> Markup:
    return Markup(_cleaner.clean(_markdown.render(text or "")))


@bp.get("/highlight.css")
@cache
def highlight_css():
    """Colours for highlighted code, light and dark, from Pygments' own styles."""
    light, dark = ("\n".join(HtmlFormatter(style=style).get_token_style_defs(".code pre"))
                   for style in ("default", "github-dark"))
    css = f"{light}\n@media (prefers-color-scheme: dark) {{\n{dark}\n}}\n"
    return css, {"Content-Type": "text/css; charset=utf-8", "Cache-Control": "public, max-age=86400"}


bp.add_app_template_global(input_bounds)


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
    return duration((job.processed_at - job.started_at).total_seconds())


@bp.app_template_filter("duration")
def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
