"""What users and models write is shown as text or as sanitized Markdown, never as markup that runs."""

import pytest

from app.models import JobStatus
from app.ui.render import markdown

from .test_ui_chat import add_turn, bubble

ATTACKS = ['<img src=x onerror="window.__xss=1">', "<script>window.__xss=1</script>"]


def test_markdown_renders_the_usual_things():
    html = markdown("# Title\n\n**bold** *it* ~~gone~~ `code`\n\n- a\n- b\n\n| x | y |\n|:--|--:|\n| 1 | 2 |\n\n"
                    "```python\nprint('<hi>')\n```\n\n[link](https://example.com)")
    for part in ("<h1>Title</h1>", "<strong>bold</strong>", "<em>it</em>", "<s>gone</s>", "<code>code</code>",
                 "<li>a</li>", "<th>x</th>", "<td>2</td>", "print('&lt;hi&gt;')",
                 '<a href="https://example.com" rel="noopener noreferrer nofollow">link</a>'):
        assert part in html
    assert "style=" not in html and "class=" not in html


@pytest.mark.parametrize("text, forbidden", [
    (ATTACKS[0], "<img"),
    (ATTACKS[1], "<script"),
    ("[click](javascript:alert(1))", "href"),
    ("<a href='javascript:alert(1)'>x</a>", "<a"),
    ("![pixel](https://tracker.example/p.png)", "<img"),
    ('<div onclick="x()">hi</div>', "<div"),
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
