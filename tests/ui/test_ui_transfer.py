"""Conversations in and out of the UI: the chat page's Export links, the conversations page's Import form (with its
CSRF token and its errors in words), and both in Chromium."""

import io
import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from app.extensions import db
from app.models import Conversation, Job, JobStatus, Message
from tests.factories import MODEL, add_turn, add_user, conversation_file

FILE = conversation_file("story-9", ("Hello llama", "Hi **human**"), ("Bye", "Bye!"))


def upload(client, body: bytes, token: str | None = "page", **kwargs):
    data = {"file": (io.BytesIO(body), "story.json")}
    if token:
        data["csrf_token"] = client.csrf_token("/chat/conversations") if token == "page" else token
    return client.post("/chat/conversations/import", data=data, **kwargs)


def counts() -> tuple[int, int, int]:
    db.session.expire_all()
    return tuple(db.session.scalar(select(func.count()).select_from(table)) for table in (Conversation, Job, Message))


def test_the_chat_page_links_to_both_exports_and_they_download(signed_in):
    add_turn("c1", "Hello there", JobStatus.DONE, "Hi", result="Hi")
    page = signed_in.get("/chat/conversations/c1").text
    assert '<a href="/chat/conversations/c1/export?format=md" download>Markdown</a>' in page
    assert '<a href="/chat/conversations/c1/export?format=json" download>JSON</a>' in page

    markdown = signed_in.get("/chat/conversations/c1/export?format=md")
    assert markdown.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert markdown.headers["Content-Disposition"] == 'attachment; filename="hello-there.md"'
    assert f"**You**\n\nHello there\n\n**{MODEL}**\n\nHi\n" in markdown.text
    exported = signed_in.get("/chat/conversations/c1/export?format=json")
    assert exported.headers["Content-Disposition"] == 'attachment; filename="hello-there.json"'
    assert [(turn["user"], turn["assistant"]) for turn in exported.json["turns"]] == [("Hello there", "Hi")]
    assert signed_in.get("/chat/conversations/c1/export?format=pdf").status_code == 400


def test_a_new_conversation_gets_its_export_links_with_its_first_prompt(signed_in):
    assert '<p id="export" class="export">\n</p>' in signed_in.get("/chat/conversations/new").text
    sent = signed_in.htmx("POST", "/chat/conversations/ui-abc/messages", data={"prompt": "Hi", "model": MODEL}).text
    links = re.search(r'<p id="export" class="export" hx-swap-oob="true">.*?</p>', sent, re.S).group(0)
    assert 'href="/chat/conversations/ui-abc/export?format=json"' in links


def test_only_those_who_may_see_a_conversation_may_export_it(signed_in, user):
    bob = add_user("bob", password=None)
    add_turn("bobs", "Secret", JobStatus.DONE, "Yes", user_id=bob.id)
    assert signed_in.get("/chat/conversations/bobs/export?format=md").status_code == 404
    user.is_admin = True
    db.session.commit()
    assert signed_in.get("/chat/conversations/bobs/export?format=md").status_code == 200


def test_an_imported_file_opens_as_a_conversation_of_normal_turns(signed_in, user):
    page = signed_in.get("/chat/conversations").text
    assert 'action="/chat/conversations/import" enctype="multipart/form-data"' in page
    answer = upload(signed_in, json.dumps(FILE).encode())
    assert answer.status_code == 303
    conversation = db.session.scalar(select(Conversation))
    assert answer.headers["Location"] == f"/chat/conversations/{conversation.id}"
    assert (conversation.session_id, conversation.user_id, conversation.title) == ("story-9", user.id, "Hello llama")

    chat = signed_in.get(answer.headers["Location"]).text
    assert "Imported “Hello llama” (2 turns)." in chat
    assert re.findall(r'<p class="text">([^<]+)</p>', chat) == ["Hello llama", "Bye"]
    jobs = db.session.scalars(select(Job).order_by(Job.id)).all()
    assert "Hi <strong>human</strong>" in chat and f"{MODEL} · job {jobs[0].id} · 5 tokens" in chat
    assert "</span> Regenerate</button>" in chat and "Stop</button>" not in chat  # ended turns, the last one regenerable


def test_an_imported_answer_by_a_model_not_offered_here_cannot_be_regenerated(signed_in):
    file = conversation_file("elsewhere", ("Hello", "Hi"))
    file["turns"][0]["job"]["model"] = "mistral-7b"
    chat = signed_in.get(upload(signed_in, json.dumps(file).encode()).headers["Location"]).text
    assert "mistral-7b · job 1" in chat and "Regenerate" not in chat
    assert f'<option selected value="{MODEL}">' in chat  # the next prompt goes to an offered model
    assert signed_in.htmx("POST", "/chat/jobs/1/regenerate").status_code == 404  # model_not_found, as on /api
    assert counts() == (1, 1, 2)


def test_importing_ones_own_conversation_again_imports_a_copy_beside_it(signed_in):
    for _ in range(2):
        assert upload(signed_in, json.dumps(FILE).encode()).status_code == 303
    names = db.session.scalars(select(Conversation.session_id).order_by(Conversation.created_at)).all()
    assert names[0] == "story-9" and re.fullmatch(r"ui-[0-9a-f]{16}", names[1]) and counts() == (2, 4, 8)


@pytest.mark.parametrize("body, problem", [
    (None, "Not imported: choose a file exported from Llamalith (JSON) first"),
    (b"not json", "Not imported: the file is not JSON: expected ident at line 1 column 2"),
    (json.dumps({**FILE, "version": 2}).encode(), "Not imported: version: Input should be 1"),
])
def test_a_file_that_cannot_be_imported_is_explained_in_words_and_nothing_is_stored(signed_in, body, problem):
    if body is None:
        answer = signed_in.post("/chat/conversations/import",
                                data={"csrf_token": signed_in.csrf_token("/chat/conversations")})
    else:
        answer = upload(signed_in, body)
    assert answer.status_code == 303 and answer.headers["Location"] == "/chat/conversations"
    assert f'<p class="flash error" role="status">{problem}</p>' in signed_in.get("/chat/conversations").text
    assert counts() == (0, 0, 0)


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_an_import_without_a_valid_csrf_token_is_refused(signed_in, token):
    answer = upload(signed_in, json.dumps(FILE).encode(), token)
    assert answer.status_code == 400 and "CSRF" in answer.text
    assert counts() == (0, 0, 0)


def test_an_import_over_the_size_limit_is_a_413_in_words(signed_in, app):
    app.settings.import_max_bytes = 2048
    answer = upload(signed_in, json.dumps(conversation_file("big", ("x" * 3000, "y"))).encode())
    assert answer.status_code == 413 and "over the limit of 2048 (IMPORT_MAX_BYTES)" in answer.text
    assert counts() == (0, 0, 0)


def test_import_then_export_in_chromium(signed_in_page, web, tmp_path):
    """...under the Content-Security-Policy: nothing the two need is refused."""
    page = signed_in_page
    refused = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
            else None)
    path = tmp_path / "story.json"
    path.write_text(json.dumps(FILE))

    page.goto(web.url + "/conversations")
    page.get_by_label("Import a conversation exported from Llamalith (JSON)").set_input_files(path)
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello llama")
    expect(page.locator(".bubble.user")).to_have_text(["Hello llama", "Bye"])
    expect(page.locator(".bubble.assistant .markdown")).to_have_text(["Hi human", "Bye!"])

    with page.expect_download() as download:
        page.get_by_role("link", name="JSON").click()
    assert download.value.suggested_filename == "hello-llama.json"
    exported = json.loads(Path(download.value.path()).read_text())
    assert {**exported, "exported_at": None} == {**FILE, "exported_at": None}
    assert refused == []
