"""End to end in Chromium against real processes: `python wsgi.py`, `python worker.py` with the real model,
Redis and the database. Nothing is mocked; the test only waits for what a person would see."""

import re

import requests
from playwright.sync_api import expect

from tests.factories import ATTACKS, NAME, PASSWORD

from .browser import send, sign_in


ANSWER_TIMEOUT = 180_000  # ms; the model shares the CPU with everything else in CI


def test_chat_answers_live_and_the_history_survives_a_reload(signed_in_page, web):
    """...under the Content-Security-Policy every page is served with: nothing the chat needs is refused."""
    page = signed_in_page
    refused = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
            else None)
    web.start_worker()
    assert "script-src 'self'" in page.goto(web.url + "/conversations").headers["content-security-policy"]
    with page.expect_navigation():  # the mark goes on the new page, not on the one leaving
        page.get_by_role("link", name="New conversation").click()
    page.evaluate("window.__samePage = true")

    send(page, "Say hello to Alice.")
    expect(page.locator(".bubble.user")).to_have_text("Say hello to Alice.")
    answer = page.locator(".bubble.assistant")
    expect(answer).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT)
    text = answer.locator(".markdown").inner_text()
    assert text.strip()
    assert page.evaluate("window.__samePage") is True  # no page load happened on the way
    expect(page).to_have_url(re.compile(r"/chat/conversations/ui-[0-9a-f]{16}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Say hello to Alice.")

    box = page.get_by_label("Message")  # a fresh, empty form: Shift+Enter is a new line, not a send
    expect(box).to_have_value("")
    box.press_sequentially("line one")
    box.press("Shift+Enter")
    box.press_sequentially("line two")
    expect(box).to_have_value("line one\nline two")
    expect(page.locator(".bubble.user")).to_have_count(1)

    page.reload()
    assert page.evaluate("window.__samePage") is None
    expect(page.locator(".bubble.user")).to_have_text("Say hello to Alice.")
    expect(page.locator(".bubble.assistant .markdown")).to_have_text(text)

    page.get_by_role("link", name="Jobs").click()
    row = page.locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-status", "done")
    expect(row).to_contain_text("Say hello to Alice.")
    page.go_back()
    expect(page.locator(".bubble.assistant .markdown")).to_have_text(text)
    assert refused == []


def test_a_visitor_is_sent_to_login_and_a_wrong_password_is_refused(page, web):
    page.goto(web.url + "/jobs")
    expect(page).to_have_url(re.compile(r"/chat/login\?next=/chat/jobs$"))

    page.get_by_label("Name").fill(NAME)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong name or password.")
    expect(page).to_have_url(re.compile(r"/chat/login"))

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(web.url + "/jobs")

    page.goto(web.url + "/conversations/new")  # an htmx request the server refuses says so
    page.evaluate("""() => {
        document.body.setAttribute("hx-headers", '{"X-CSRFToken": "stale"}');
        document.querySelectorAll("input[name=csrf_token]").forEach(field => field.value = "stale");
    }""")
    send(page, "Hello?")
    expect(page.get_by_role("alert")).to_have_text("The server refused that (400). Reload the page and try again.")
    expect(page.locator(".bubble")).to_have_count(0)
    page.reload()  # as the message says: a fresh page has a valid token again

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/chat/login$"))
    page.goto(web.url + "/conversations")
    expect(page).to_have_url(re.compile(r"/chat/login\?next="))


def test_stop_ends_a_running_answer_and_keeps_its_text(signed_in_page, web):
    page = signed_in_page
    web.start_worker(env={"LLM_MAX_TOKENS": "400"})  # long enough to still be running when Stop is pressed
    page.goto(web.url + "/conversations/new")
    send(page, "Write a very long story about a lighthouse keeper and her cat.")

    answer = page.locator(".bubble.assistant")
    expect(answer.locator(".live")).not_to_be_empty(timeout=ANSWER_TIMEOUT)  # the first tokens are in
    expect(answer).to_have_attribute("data-status", "processing")
    answer.get_by_role("button", name="Stop").click()

    expect(answer).to_have_attribute("data-status", "cancelled", timeout=30_000)
    expect(answer).to_contain_text("Stopped: the text above is what was written until then.")
    expect(answer.get_by_role("button", name="Stop")).to_have_count(0)
    job = web.get(f"/api/jobs/{answer.get_attribute('data-job-id')}")
    assert job["status"] == "cancelled" and job["result"]
    assert job["usage"]["completion_tokens"] < 400


def finish_job_with(stack, job_id: str, text: str) -> None:
    """Write an answer as the worker would, straight into the stack's database: a model's output we choose."""
    stack.query("UPDATE jobs SET status = 'done', result = :text, started_at = CURRENT_TIMESTAMP, "
                "processed_at = CURRENT_TIMESTAMP WHERE id = :id", text=text, id=int(job_id))
    stack.query("INSERT INTO messages (conversation_id, role, content, created_at, job_id) "
                "SELECT conversation_id, 'assistant', :text, CURRENT_TIMESTAMP, id FROM jobs WHERE id = :id",
                text=text, id=int(job_id))


def test_markup_in_prompts_and_answers_stays_text(signed_in_page, web):
    page = signed_in_page
    page.goto(web.url + "/conversations/new")
    prompt = "\n".join(ATTACKS)
    send(page, prompt)
    prompt_bubble, answer = page.locator(".bubble.user"), page.locator(".bubble.assistant")
    expect(answer).to_have_attribute("data-status", "queued")  # no worker: the answer is ours to write

    finish_job_with(web, answer.get_attribute("data-job-id"), "\n\n".join(ATTACKS))
    expect(answer).to_have_attribute("data-status", "done")  # arrived through the polling partial
    for _ in ("live", "after a reload"):
        assert prompt_bubble.inner_text() == prompt
        assert answer.locator(".markdown").inner_text().split("\n\n") == ATTACKS
        expect(page.locator(".bubble img, .bubble script")).to_have_count(0)
        assert page.evaluate("typeof window.__xss") == "undefined"
        page.reload()


def test_advanced_settings_regenerate_and_copy(signed_in_page, web):
    page = signed_in_page
    web.start_worker()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(web.url + "/conversations/new")
    page.get_by_text("Advanced").click()
    page.get_by_label("Max tokens").fill("12")
    page.get_by_label("Temperature").fill("0.7")
    send(page, "Name a fruit.")
    first = page.locator(".bubble.assistant")
    expect(first).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT)
    first_id = first.get_attribute("data-job-id")

    first.get_by_role("button", name="Copy").click()
    expect(first.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == web.get(f"/api/jobs/{first_id}")["result"]

    first.get_by_role("button", name="Regenerate").click()
    again = page.locator(".bubble.assistant")
    expect(again).not_to_have_attribute("data-job-id", first_id)
    expect(again).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT)
    second_id = again.get_attribute("data-job-id")
    expect(page.locator(".bubble.user")).to_have_text(["Name a fruit."])
    page.reload()
    expect(page.locator(".bubble.assistant")).to_have_attribute("data-job-id", second_id)

    page.get_by_role("link", name=f"job {second_id}").click()  # the job page shows the advanced settings
    expect(page.locator("pre.plain").last).to_contain_text('"max_tokens": 12')
    expect(page.locator("pre.plain").last).to_contain_text('"temperature": 0.7')
    page.get_by_role("link", name="Jobs").first.click()
    expect(page.locator("tbody tr")).to_have_count(2)  # the replaced answer's job is still listed


def test_a_code_block_is_highlighted_and_its_copy_button_copies_the_code(signed_in_page, web):
    page = signed_in_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(web.url + "/conversations/new")
    send(page, "Show me Python.")
    answer = page.locator(".bubble.assistant")
    expect(answer).to_have_attribute("data-status", "queued")
    finish_job_with(web, answer.get_attribute("data-job-id"), "Here:\n\n```python\nprint('hi')  # <b>\n```")
    expect(answer).to_have_attribute("data-status", "done")
    code = answer.locator(".code")
    expect(code.locator(".language")).to_have_text("python")
    expect(code.locator("span.nb")).to_have_text("print")  # highlighted by the server
    code.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == "print('hi')  # <b>\n"


def test_a_key_is_created_shown_once_and_revoked_in_the_browser(signed_in_page, web):
    page = signed_in_page
    page.get_by_role("link", name="Keys").click()
    page.get_by_label("Key name").fill("from-the-browser")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text()
    assert key.startswith("llk_") and len(page.locator("#new-secret").inner_text()) == 64
    assert requests.get(web.url + "/api/models", headers={"Authorization": f"Bearer {key}"}, timeout=10).ok
    page.reload()
    expect(page.locator("#new-key")).to_have_count(0)  # shown once
    page.locator("tr", has_text="from-the-browser").get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status")).to_contain_text("Revoked the key “from-the-browser”.")
    assert requests.get(web.url + "/api/models", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 401


def test_a_password_is_changed_on_the_account_page_on_a_phone(page, web):
    """At 375 px, as on a phone: every link of the top bar and the whole form in view."""
    page.set_viewport_size({"width": 375, "height": 800})
    sign_in(page, web.url)
    page.get_by_role("link", name="Account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Account")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("a brand new passphrase")
    page.get_by_label("New password again").fill("a brand new passphrase")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("status")).to_contain_text("Your password is changed.")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.get_by_role("button", name="Sign out everywhere").click()
    sign_in(page, web.url, password="a brand new passphrase")
