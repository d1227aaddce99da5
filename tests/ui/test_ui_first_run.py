"""The first minute of a new user, for real: `make run` in a fresh instance folder prints the URL and the admin
password; Chromium signs in with them and asks the default model a question."""

from playwright.sync_api import expect

from tests.stack import wait_for_line

from .browser import send

ANSWER_TIMEOUT = 180_000  # ms


def test_make_run_prints_where_to_sign_in_and_the_default_model_answers(make_run, page):
    process, output, _ = make_run
    password = wait_for_line(output, r"^admin password: (\S+)$").group(1)
    url = wait_for_line(output, r"open (http://\S+/chat/) and sign in").group(1)
    wait_for_line(output, r"worker\.\d+\s+\| .* serving smollm2-135m")
    wait_for_line(output, r"Llamalith is listening on")

    page.goto(url)
    page.get_by_label("Name").fill("admin")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(url + "conversations")
    page.get_by_role("link", name="New conversation").first.click()
    expect(page.get_by_label("Model")).to_have_value("smollm2-135m")

    question = "What is the capital of France?"
    send(page, question)
    answer = page.locator(".bubble.assistant")
    expect(answer).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT)
    text = answer.locator(".markdown").inner_text().strip()
    assert text and question not in text
    assert "smollm2-135m" in answer.locator(".meta").inner_text()
    assert output.read_text().count("admin password:") == 1 and process.poll() is None
