"""The chat by keyboard alone, in Chromium: Tab reaches every control (Advanced, Send, Stop, Copy, Regenerate) and
Enter or Space works it. No worker: a job stays queued until the test writes its answer."""

import pytest
from playwright.sync_api import expect

from .test_ui_browser import finish_job_with

# What the keyboard reaches in the chat: nothing a database changes.
pytestmark = pytest.mark.same_on_postgres

MAX_TABS = 80  # the top bar, the composer and a few bubbles' buttons, with room to spare


def tab_to(page, control) -> None:
    """Press Tab until `control` has the focus, as a keyboard user would."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if control.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError(f"Tab never reached {control}")


def test_every_chat_control_is_reached_and_worked_by_keyboard(signed_in_page, web):
    page = signed_in_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(web.url + "/conversations/new")

    tab_to(page, page.get_by_text("Advanced"))
    page.keyboard.press("Enter")
    tab_to(page, page.get_by_label("Max tokens"))
    page.keyboard.type("12")
    tab_to(page, page.get_by_label("Message"))
    page.keyboard.type("Tell me a story.")
    tab_to(page, page.get_by_role("button", name="Send"))
    page.keyboard.press("Enter")
    answer = page.locator(".bubble.assistant")
    expect(answer).to_have_attribute("data-status", "queued")

    tab_to(page, answer.get_by_role("button", name="Stop"))
    page.keyboard.press("Space")
    expect(answer).to_have_attribute("data-status", "cancelled")

    tab_to(page, page.get_by_label("Message"))
    page.keyboard.type("Name a fruit.")
    page.keyboard.press("Enter")
    answer = page.locator(".bubble.assistant").last
    expect(answer).to_have_attribute("data-status", "queued")
    job_id = answer.get_attribute("data-job-id")
    assert web.get(f"/api/jobs/{job_id}")["params"] == {"max_tokens": 12}  # Advanced carried over
    finish_job_with(web, job_id, "A pear.")
    expect(answer).to_have_attribute("data-status", "done")

    tab_to(page, answer.get_by_role("button", name="Copy"))
    page.keyboard.press("Enter")
    expect(answer.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == "A pear."

    tab_to(page, answer.get_by_role("button", name="Regenerate"))
    page.keyboard.press("Enter")
    expect(page.locator(".bubble.assistant").last).not_to_have_attribute("data-job-id", job_id)
    expect(page.locator(".bubble.assistant").last).to_have_attribute("data-status", "queued")
