"""The chat page: sending (with and without JavaScript), validation, the answer bubble in every state, Stop."""

import re

import pytest
from sqlalchemy import func, select

from app import streams
from app.extensions import db
from app.models import Conversation, Job, JobStatus, Message, Priority
from tests.factories import MODEL, add_turn, bubble


def send(client, conversation_id: str, prompt: str, htmx: bool = True, **fields):
    data = {"prompt": prompt, "model": MODEL, **fields}
    url = f"/chat/conversations/{conversation_id}/messages"
    if htmx:
        return client.htmx("POST", url, data=data)
    return client.post(url, data={**data, "csrf_token": client.csrf_token("/chat/conversations")})


def job_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Job))


def test_a_new_conversation_page_sends_to_a_fresh_id(signed_in):
    page = signed_in.get("/chat/conversations/new").text
    assert "<h1 id=\"chat-title\">New conversation</h1>" in page
    action = re.search(r'id="composer" class="composer" method="post" action="([^"]+)"', page).group(1)
    assert re.fullmatch(r"/chat/conversations/ui-[0-9a-f]{16}/messages", action)
    assert f'<option selected value="{MODEL}">' in page
    assert db.session.scalar(select(func.count()).select_from(Conversation)) == 0  # nothing stored yet


def test_sending_with_htmx_shows_the_prompt_and_a_polling_answer(signed_in, user):
    answer = send(signed_in, "ui-abc", "Tell me a *story*\r\nplease", system_prompt="Be brief.")
    assert answer.status_code == 200
    job = db.session.scalar(select(Job))
    assert (job.conversation_id, job.user_input, job.system_prompt) == ("ui-abc", "Tell me a *story*\nplease", "Be brief.")
    assert (job.priority, job.user_id, job.params) == (Priority.INTERACTIVE.value, user.id, {})
    assert db.session.get(Conversation, "ui-abc").user_id == user.id

    html = answer.text
    assert '<li class="bubble user"><p class="text">Tell me a *story*\nplease</p></li>' in html
    assert f'hx-get="/chat/jobs/{job.id}/answer" hx-trigger="every 500ms"' in bubble(html, job.id)
    assert "Waiting in the queue (position 1)" in html and "Stop" in html
    # a fresh, empty form that keeps the chosen model and system prompt, and the title, out of band
    form = re.search(r'<form id="composer".*?</form>', html, re.S).group(0)
    assert 'hx-swap-oob="true"' in form and "Be brief.</textarea>" in form and "please</textarea>" not in form
    assert '<h1 id="chat-title" hx-swap-oob="true">Tell me a *story* please</h1>' in html
    assert answer.headers["HX-Replace-Url"] == "/chat/conversations/ui-abc"


def test_sending_without_javascript_redirects_to_the_answer(signed_in):
    answer = send(signed_in, "ui-abc", "Hello there", htmx=False)
    job = db.session.scalar(select(Job))
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"/chat/conversations/ui-abc#job-{job.id}"
    page = signed_in.get(answer.headers["Location"]).text
    assert "Hello there" in page and 'id="job-1"' in page
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page  # reloads itself meanwhile


@pytest.mark.parametrize("fields, error", [
    ({"prompt": ""}, "Write a message first."),
    ({"prompt": "  \r\n "}, "Write a message first."),
    ({"model": "gpt-17"}, "Unknown model &#39;gpt-17&#39;; available: smollm2-135m, gemma3-270m."),
    ({"prompt": "word " * 5000}, "the system prompt and input take 5026 tokens, but model"),
])
@pytest.mark.parametrize("htmx", [True, False])
def test_a_refused_prompt_is_explained_on_the_form_and_stores_nothing(signed_in, fields, error, htmx):
    answer = send(signed_in, "ui-abc", **{"prompt": "hi", **fields}, htmx=htmx)
    assert answer.status_code == 422
    assert re.search(r"<p class=\"alert\" role=\"alert\">[^<]*" + re.escape(error), answer.text), answer.text[:2000]
    assert ("<html" in answer.text) is not htmx
    assert 'hx-swap-oob="true"' in answer.text if htmx else "<h1" in answer.text
    assert job_count() == 0


def test_an_impossible_conversation_id_is_404(signed_in):
    assert send(signed_in, "has spaces", "hi").status_code == 404
    assert job_count() == 0


def test_the_history_shows_every_state_in_turn_order(signed_in):
    done = add_turn("c", "First", JobStatus.DONE, "The **first** answer", result="The **first** answer",
                    completion_tokens=4)
    failed = add_turn("c", "Second", JobStatus.ERROR, error="the model could not be loaded", error_code="model_load_failed")
    stopped = add_turn("c", "Third", JobStatus.CANCELLED, "Half an ans", result="Half an ans")
    running = add_turn("c", "Fourth", JobStatus.PROCESSING)
    streams.TokenWriter(signed_in.application.redis, running.id, 100).append("Partial tok")
    waiting = add_turn("c", "Fifth", JobStatus.QUEUED)

    page = signed_in.get("/chat/conversations/c").text
    order = [m.group(1) or f"job {m.group(2)}"
             for m in re.finditer(r'<p class="text">([^<]+)</p>|<li id="job-(\d+)"', page)]
    assert order == ["First", f"job {done.id}", "Second", f"job {failed.id}", "Third", f"job {stopped.id}",
                     "Fourth", f"job {running.id}", "Fifth", f"job {waiting.id}"]

    assert "<strong>first</strong>" in bubble(page, done.id) and "4 tokens" in bubble(page, done.id)
    assert "the model could not be loaded" in bubble(page, failed.id)
    assert "Half an ans" in bubble(page, stopped.id) and "Stopped: the text above" in bubble(page, stopped.id)
    assert "Partial tok" in bubble(page, running.id)  # from the live token stream
    assert "Waiting in the queue (position 1)" in bubble(page, waiting.id)
    for finished in (done, failed, stopped):
        assert "hx-trigger" not in bubble(page, finished.id) and "Stop</button>" not in bubble(page, finished.id)
    for unfinished in (running, waiting):
        assert "Stop</button>" in bubble(page, unfinished.id)
    assert 'hx-trigger="every 500ms"' in bubble(page, waiting.id)  # its place in the queue changes
    assert f'data-events="/chat/jobs/{running.id}/events"' in bubble(page, running.id)  # app.js follows its tokens
    assert "hx-trigger" not in bubble(page, running.id)


def test_a_running_answer_streams_its_tokens_and_its_end(signed_in):
    job = add_turn("c", "Hello", JobStatus.DONE, "Hello there", result="Hello there")
    writer = streams.TokenWriter(signed_in.application.redis, job.id, 100)
    writer.start(1)
    writer.append("Hello")
    writer.append(" there")
    writer.finish("done")
    answer = signed_in.get(f"/chat/jobs/{job.id}/events")
    assert answer.status_code == 200 and answer.mimetype == "text/event-stream"
    body = answer.get_data(as_text=True)
    assert body.startswith("retry: 1000\n")  # a dropped stream is resumed within a second
    events = re.findall(r"(?:id: (\S+)\n)?event: (\w+)\ndata: (.*)\n\n", body)
    assert [(event, data) for _, event, data in events] == [("ready", str(job.id)), ("token", '"Hello"'),
                                                            ("token", '" there"'), ("end", '"done"')]
    after = events[2][0]
    resumed = signed_in.get(f"/chat/jobs/{job.id}/events", headers={"Last-Event-ID": after}).get_data(as_text=True)
    assert "event: token" not in resumed and "event: end" in resumed  # nothing twice
    assert signed_in.get(f"/chat/jobs/{job.id}/events", headers={"Last-Event-ID": "yesterday"}).status_code == 400
    assert signed_in.get("/chat/jobs/999/events").status_code == 404


def test_a_bubble_that_cannot_stream_polls(signed_in):
    running = add_turn("c", "Hello", JobStatus.PROCESSING)
    polling = signed_in.get(f"/chat/jobs/{running.id}/answer?poll=1", headers={"HX-Request": "true"}).text
    assert f'hx-get="/chat/jobs/{running.id}/answer?poll=1" hx-trigger="every 500ms"' in polling
    assert "data-events" not in polling


def test_the_answer_polls_until_the_real_model_has_answered(signed_in, work):
    send(signed_in, "ui-abc", "Say hello.")
    job = db.session.scalar(select(Job))
    polling = signed_in.get(f"/chat/jobs/{job.id}/answer", headers={"HX-Request": "true"})
    assert 'hx-trigger="every 500ms"' in polling.text and "<html" not in polling.text

    work()

    final = signed_in.get(f"/chat/jobs/{job.id}/answer", headers={"HX-Request": "true"}).text
    reply = db.session.scalar(select(Message).where(Message.role == "assistant"))
    assert job.status == "done" and reply.content
    assert "hx-trigger" not in final and 'data-status="done"' in final
    page = signed_in.get("/chat/conversations/ui-abc").text
    assert "noscript" not in page  # nothing pending: no self-reload
    assert f"{job.model} · job {job.id} · {job.completion_tokens} tokens" in page


def test_the_answer_url_sends_a_browser_to_the_conversation(signed_in):
    job = add_turn("c", "First", JobStatus.QUEUED)
    answer = signed_in.get(f"/chat/jobs/{job.id}/answer")
    assert answer.status_code == 302 and answer.headers["Location"] == f"/chat/conversations/c#job-{job.id}"


def test_stop_cancels_a_queued_job_and_shows_it_stopped(signed_in, user):
    send(signed_in, "ui-abc", "Write a long story.")
    job = db.session.scalar(select(Job))
    answer = signed_in.htmx("POST", f"/chat/jobs/{job.id}/stop")
    assert answer.status_code == 200
    assert 'data-status="cancelled"' in answer.text and "Stopped before any text was written." in answer.text
    assert "hx-trigger" not in answer.text
    db.session.expire_all()
    assert job.status == "cancelled"


def test_stop_on_a_finished_job_shows_how_it_ended(signed_in):
    job = add_turn("c", "First", JobStatus.DONE, "All done", result="All done")
    answer = signed_in.htmx("POST", f"/chat/jobs/{job.id}/stop")
    assert answer.status_code == 200 and "All done" in answer.text and 'data-status="done"' in answer.text


def test_stop_without_javascript_returns_to_the_conversation(signed_in):
    job = add_turn("c", "First", JobStatus.QUEUED)
    answer = signed_in.post(f"/chat/jobs/{job.id}/stop", data={"csrf_token": signed_in.csrf_token("/chat/conversations")})
    assert answer.status_code == 303 and answer.headers["Location"] == f"/chat/conversations/c#job-{job.id}"


def test_the_form_continues_with_the_last_model_and_system_prompt(signed_in):
    add_turn("c", "First", JobStatus.DONE, "ok", system_prompt="You are a pirate.")
    page = signed_in.get("/chat/conversations/c").text
    assert "\nYou are a pirate.</textarea>" in page and "<details open>" in page
    assert f'<option selected value="{MODEL}">' in page


def test_advanced_settings_reach_the_job_and_carry_on_to_the_next_prompt(signed_in):
    page = signed_in.get("/chat/conversations/new").text
    assert '<details class="advanced">' in page  # closed until something is set
    temperature = re.search(r'<input[^>]*name="temperature"[^>]*>', page).group(0)
    for attribute in ('type="number"', 'placeholder="0.2"', 'min="0"', 'max="5"', 'step="0.01"'):
        assert attribute in temperature  # the model's default, and GenerationParams' limits
    send(signed_in, "ui-abc", "Hello", max_tokens="50", temperature="0.3", top_p="0.5")
    job = db.session.scalar(select(Job))
    assert job.params == {"max_tokens": 50, "temperature": 0.3, "top_p": 0.5}
    page = signed_in.get("/chat/conversations/ui-abc").text
    assert '<details class="advanced" open>' in page and 'name="max_tokens"' in page and 'value="50"' in page


@pytest.mark.parametrize("field, value, error", [
    ("temperature", "9", "Temperature: Input should be less than or equal to 5."),
    ("max_tokens", "0", "Max tokens: Input should be greater than or equal to 1."),
    ("top_p", "many", "Not a valid float value."),
])
def test_advanced_settings_out_of_range_are_refused_in_words(signed_in, field, value, error):
    answer = send(signed_in, "ui-abc", "Hello", **{field: value})
    assert answer.status_code == 422 and error in answer.text and job_count() == 0


def test_an_empty_system_prompt_means_the_models_default_which_the_job_records(signed_in):
    send(signed_in, "ui-abc", "Hello", system_prompt="")
    job = db.session.scalar(select(Job))
    assert job.system_prompt == signed_in.application.settings.models[MODEL].system_prompt
    page = signed_in.get("/chat/conversations/ui-abc").text
    assert "<details open>" not in page  # the default is not pasted into the next prompt's form


def test_regenerate_answers_the_last_turn_again_and_replaces_its_answer(signed_in):
    first = add_turn("c", "First", JobStatus.DONE, "First answer", result="First answer")
    last = add_turn("c", "Second", JobStatus.DONE, "Old answer", result="Old answer", params={"max_tokens": 20})
    page = signed_in.get("/chat/conversations/c").text
    assert f"/chat/jobs/{last.id}/regenerate" in bubble(page, last.id)
    assert "regenerate" not in bubble(page, first.id)
    assert 'data-copy="Old answer"' in bubble(page, last.id)

    answer = signed_in.htmx("POST", f"/chat/jobs/{last.id}/regenerate")
    again = db.session.scalar(select(Job).order_by(Job.id.desc()))
    assert answer.status_code == 200 and f'<li id="job-{again.id}"' in answer.text and 'data-status="queued"' in answer.text
    assert (again.conversation_id, again.user_input, again.params) == ("c", "Second", {"max_tokens": 20})

    page = signed_in.get("/chat/conversations/c").text
    assert page.count('<p class="text">Second</p>') == 1 and "Old answer" not in page
    assert f'<li id="job-{again.id}"' in page and f'<li id="job-{last.id}"' not in page
    assert "Old answer" in signed_in.get(f"/chat/jobs/{last.id}").text  # the old job keeps its result
    assert signed_in.htmx("POST", f"/chat/jobs/{first.id}/regenerate").status_code == 409
    assert signed_in.htmx("POST", f"/chat/jobs/{again.id}/regenerate").status_code == 409  # not finished yet


def test_regenerate_without_javascript_returns_to_the_new_answer(signed_in):
    job = add_turn("c", "First", JobStatus.ERROR, error="boom")
    answer = signed_in.post(f"/chat/jobs/{job.id}/regenerate",
                            data={"csrf_token": signed_in.csrf_token("/chat/conversations")})
    again = db.session.scalar(select(Job).order_by(Job.id.desc()))
    assert answer.status_code == 303 and answer.headers["Location"] == f"/chat/conversations/c#job-{again.id}"
