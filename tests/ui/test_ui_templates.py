"""Prompt templates in Chromium against real processes: make one, edit it, and chat with it."""

from playwright.sync_api import expect

from .browser import send

ANSWER_TIMEOUT = 180_000  # ms; the model shares the CPU with everything else in CI


def test_a_template_is_made_edited_and_chosen_in_the_chat_with_its_variables(signed_in_page, web):
    page = signed_in_page
    web.start_worker()
    page.get_by_role("link", name="Templates").click()
    page.get_by_label("Name").fill("tutor")
    page.get_by_label("System prompt").fill("You teach {{subject}}.")
    page.get_by_role("button", name="Save version 1").click()
    expect(page.get_by_text("Saved tutor@1.")).to_be_visible()
    page.get_by_label("System prompt").fill("You teach {{subject}} to {{ audience }}. Be brief.")
    page.get_by_role("button", name="Save as version 2").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("tutor version 2")
    page.get_by_role("link", name="tutor@1").click()
    expect(page.locator("pre.template-text")).to_have_text("You teach {{subject}}.")

    page.get_by_role("link", name="Conversations").click()
    page.get_by_role("link", name="New conversation").click()
    page.get_by_label("Template").select_option("tutor@1")  # an earlier version, from the template's group
    expect(page.locator("#template-fields pre")).to_have_text("You teach {{subject}}.")
    expect(page.get_by_label("audience")).to_have_count(0)
    page.get_by_label("Template").select_option("tutor")  # htmx brings the text and a field per variable
    expect(page.locator("#template-fields pre")).to_have_text("You teach {{subject}} to {{ audience }}. Be brief.")
    page.get_by_label("subject").fill("geography")
    page.get_by_label("audience").fill("children")
    send(page, "What is a river?")
    answer = page.locator(".bubble.assistant")
    expect(answer).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT)
    expect(page.get_by_label("audience")).to_have_value("children")  # the next prompt keeps the template

    job = web.get(f"/api/jobs/{answer.get_attribute('data-job-id')}")
    assert (job["prompt_template"], job["system_prompt"]) == ("tutor@2", "You teach geography to children. Be brief.")
    page.goto(web.url + f"/jobs/{job['id']}")
    expect(page.get_by_role("link", name="tutor@2")).to_be_visible()
