"""The conversations list: newest first, message counts, pages, search, rename and delete."""

import re
from datetime import datetime, timedelta

import pytest
from rq import Queue
from sqlalchemy import func, insert, select

from app import jobs
from app.extensions import db
from app.models import Conversation, Job, Message
from tests.factories import MODEL, add_conversation, recorded_statements


def titles(html: str) -> list[str]:
    return re.findall(r'<a class="title" href="[^"]+">([^<]*)</a>', html)


def test_the_list_shows_title_count_and_last_activity_newest_first(signed_in):
    add_conversation("old", "Old story", minutes_ago=60, messages=("a", "b", "c"))
    add_conversation("new", "New story", minutes_ago=1, messages=("d",))
    add_conversation("empty", "", minutes_ago=30)

    page = signed_in.get("/chat/conversations").text
    assert titles(page) == ["New story", "empty", "Old story"]  # an untitled conversation shows its id
    assert "1 message · 2025-12-31 23:59:00 UTC" in page
    assert "3 messages · 2025-12-31 23:00:00 UTC" in page
    assert "0 messages" in page
    assert 'href="/chat/conversations/new"' in page


def test_pages_of_25_with_links_between_them(signed_in):
    for n in range(30):
        add_conversation(f"c{n}", f"Conversation {n}", minutes_ago=n)
    first = signed_in.get("/chat/conversations").text
    assert titles(first) == [f"Conversation {n}" for n in range(25)]
    assert 'href="/chat/conversations?page=2"' in first and "Newer" not in first

    second = signed_in.get("/chat/conversations?page=2").text
    assert titles(second) == [f"Conversation {n}" for n in range(25, 30)]
    assert 'href="/chat/conversations?page=1"' in second and "Older" not in second


def test_search_finds_titles_and_message_content(signed_in):
    add_conversation("a", "Pirate stories", messages=("Tell me about ships",))
    add_conversation("b", "Cooking", messages=("How long do I boil an egg?",))
    add_conversation("c", "100% sure", messages=("percent_signs",))

    assert titles(signed_in.get("/chat/conversations?q=pirate").text) == ["Pirate stories"]
    assert titles(signed_in.get("/chat/conversations?q=EGG").text) == ["Cooking"]
    assert titles(signed_in.get("/chat/conversations?q=%25").text) == ["100% sure"]  # LIKE wildcards are literal
    assert titles(signed_in.get("/chat/conversations?q=t_signs").text) == ["100% sure"]
    nothing = signed_in.get("/chat/conversations?q=dragons").text
    assert "No conversation matches “dragons”." in nothing


def test_htmx_gets_only_the_list_and_a_browser_the_whole_page(signed_in):
    add_conversation("a", "Pirate stories")
    fragment = signed_in.get("/chat/conversations?q=pirate", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<div id="conversation-list">') and "<html" not in fragment.text
    assert "HX-Request" in fragment.headers["Vary"] and fragment.headers["Cache-Control"] == "no-store"

    restore = signed_in.get("/chat/conversations?q=pirate",
                            headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})
    assert "<html" in restore.text
    page = signed_in.get("/chat/conversations?q=pirate").text
    assert "<html" in page and 'value="pirate"' in page and 'hx-push-url="true"' in page


def test_listing_10000_conversations_takes_a_few_statements(signed_in, user):
    rows = [{"id": f"c{n:05}", "session_id": f"c{n:05}", "user_id": user.id, "title": f"Conversation {n}",
             "updated_at": datetime(2026, 1, 1) + timedelta(seconds=n)} for n in range(10_000)]
    db.session.execute(insert(Conversation), rows)
    db.session.execute(insert(Message), [{"conversation_id": f"c{n:05}", "role": "user", "content": "hi"}
                                         for n in range(0, 10_000, 3)])
    db.session.commit()
    with recorded_statements() as statements:
        page = signed_in.get("/chat/conversations?page=3").text
    assert titles(page)[0] == "Conversation 9949"
    assert "1 message ·" in page and "0 messages ·" in page
    assert len(statements) == 2, statements  # the signed-in user, then the page with its message counts


def test_rename_with_htmx_returns_the_row(signed_in):
    add_conversation("a", "Old title", messages=("x", "y"))
    answer = signed_in.htmx("POST", "/chat/conversations/a/rename", data={"title": "  New title "})
    assert answer.status_code == 200
    assert answer.text.lstrip().startswith('<li class="conversation">')
    assert titles(answer.text) == ["New title"] and "2 messages" in answer.text
    db.session.expire_all()
    assert db.session.get(Conversation, "a").title == "New title"


def test_rename_to_nothing_is_refused_in_words(signed_in):
    add_conversation("a", "Old title")
    answer = signed_in.htmx("POST", "/chat/conversations/a/rename", data={"title": "   "})
    assert answer.status_code == 422 and "A title cannot be empty." in answer.text
    without_js = signed_in.post("/chat/conversations/a/rename",
                                data={"title": "", "csrf_token": signed_in.csrf_token("/chat/conversations")},
                                follow_redirects=True)
    assert "A title cannot be empty." in without_js.text
    db.session.expire_all()
    assert db.session.get(Conversation, "a").title == "Old title"


def test_rename_without_javascript_returns_to_the_list(signed_in):
    add_conversation("a", "Old title")
    answer = signed_in.post("/chat/conversations/a/rename",
                            data={"title": "New", "csrf_token": signed_in.csrf_token("/chat/conversations")})
    assert answer.status_code == 303 and answer.headers["Location"] == "/chat/conversations"


def test_delete_with_htmx_asks_first_and_removes_the_row(signed_in, user):
    jobs.submit(user.id, "a", "Hello", MODEL, None, {}, conversation_id="a")
    page = signed_in.get("/chat/conversations").text
    assert 'hx-confirm="Delete “Hello” and all its messages?"' in page

    answer = signed_in.htmx("POST", "/chat/conversations/a/delete")
    assert answer.status_code == 200 and answer.text == ""
    db.session.expire_all()
    assert db.session.get(Conversation, "a") is None
    assert db.session.scalar(select(func.count()).select_from(Message)) == 0
    assert db.session.scalar(select(func.count()).select_from(Job)) == 0


def test_delete_without_javascript_confirms_on_a_page(signed_in):
    add_conversation("a", "Doomed")
    confirm = signed_in.get("/chat/conversations/a/delete").text
    assert "Delete this conversation?" in confirm and "“Doomed”" in confirm
    answer = signed_in.post("/chat/conversations/a/delete",
                            data={"csrf_token": signed_in.csrf_token("/chat/conversations")}, follow_redirects=True)
    assert "Deleted “Doomed”." in answer.text and titles(answer.text) == []


def test_delete_takes_unfinished_jobs_off_the_queue(app, signed_in, user):
    job = jobs.submit(user.id, "a", "Hello", MODEL, None, {}, conversation_id="a")
    queue = Queue(jobs.queue_name(job.model, job.priority), connection=app.redis)
    assert queue.count == 1
    signed_in.htmx("POST", "/chat/conversations/a/delete")
    assert queue.count == 0


@pytest.mark.parametrize("url", ["/chat/conversations/nope", "/chat/conversations/nope/delete"])
def test_unknown_conversations_are_404(signed_in, url):
    answer = signed_in.get(url)
    assert answer.status_code == 404 and "Back to the conversations" in answer.text
