"""What users and models write is shown as text or as sanitized Markdown, never as markup that runs."""

import re

import pytest

from app.models import JobStatus
from app.ui.render import ALLOWED_CLASSES, markdown

from tests.factories import ATTACKS, add_turn, bubble

def test_markdown_renders_the_usual_things():
    html = markdown("# Title\n\n**bold** *it* ~~gone~~ `code`\n\n- a\n- b\n\n| x | y |\n|:--|--:|\n| 1 | 2 |\n\n"
                    "```python\nprint('<hi>')\n```\n\n[link](https://example.com)")
    for part in ("<h1>Title</h1>", "<strong>bold</strong>", "<em>it</em>", "<s>gone</s>", "<code>code</code>",
                 "<li>a</li>", "<th>x</th>", "<td>2</td>",
                 '<a href="https://example.com" rel="noopener noreferrer nofollow">link</a>'):
        assert part in html
    assert "style=" not in html


def test_code_blocks_are_highlighted_on_the_server_with_a_copy_button():
    html = markdown("```python\nprint('<hi>')  # done\n```\n\n```\" onclick=\"x\n<b>plain</b>\n```")
    python, other = html.split('<div class="code">')[1:]
    assert '<span class="language">python</span><button type="button" class="copy">Copy</button>' in python
    assert '<span class="nb">print</span>' in python and "<span class=\"s1\">'&lt;hi&gt;'</span>" in python
    assert '<span class="c1"># done</span>' in python
    assert "onclick" not in other and "<b>" not in other and "&lt;b&gt;plain&lt;/b&gt;" in other
    classes = set(re.findall(r'class="([^"]+)"', html))
    assert classes <= ALLOWED_CLASSES["div"] | ALLOWED_CLASSES["span"] | ALLOWED_CLASSES["button"]


def test_the_highlight_colours_are_served_to_everyone(browser):
    css = browser.get("/chat/highlight.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert re.search(r"^\.code pre \.k \{ color: #\w+; font-weight: bold \}", css.text, re.M)
    assert "prefers-color-scheme: dark" in css.text


@pytest.mark.parametrize("text, forbidden", [
    (ATTACKS[0], "<img"),
    (ATTACKS[1], "<script"),
    ("[click](javascript:alert(1))", "href"),
    ("<a href='javascript:alert(1)'>x</a>", "<a"),
    ("![pixel](https://tracker.example/p.png)", "<img"),
    ('<div onclick="x()">hi</div>', "<div"),
    ('<button class="copy" onclick="x()">hi</button>', "<button"),
    ('<span class="k">hi</span>', "<span"),
    ("[x](data:text/html;base64,PHNjcmlwdD4=)", "href"),
])
def test_markdown_never_lets_markup_through(text, forbidden):
    assert forbidden not in markdown(text)


def test_raw_html_from_a_model_is_shown_as_text():
    assert markdown(ATTACKS[1]) == "<p>&lt;script&gt;window.__xss=1&lt;/script&gt;</p>\n"


def test_prompts_and_answers_in_the_page_are_escaped(signed_in):
    job = add_turn("c", ATTACKS[0] + "\n" + ATTACKS[1], JobStatus.DONE, ATTACKS[0] + "\n\n" + ATTACKS[1])
    page = signed_in.get("/chat/conversations/c").text
    assert "<img" not in page and "<script>window" not in page
    assert "&lt;img src=x onerror=&#34;window.__xss=1&#34;&gt;\n&lt;script&gt;window.__xss=1&lt;/script&gt;" in page
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in bubble(page, job.id)
