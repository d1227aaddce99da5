"""`make screenshots`: pictures of the UI for the docs, taken in Chromium from a real stack (Redis, web,
worker, the real model) in a temporary folder, as the browser tests run it. Writes docs/images/*.png."""

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script, the project is not on the path yet

import requests  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.stack import MODEL_PATHS, Stack, start_redis  # noqa: E402
from tests.ui.browser import create_user, launch, send, sign_in  # noqa: E402

IMAGES = ROOT / "docs" / "images"
DESKTOP = {"width": 1200, "height": 820}
PHONE = {"width": 390, "height": 780}
ANSWER_TIMEOUT = 300_000  # ms


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        redis, socket = start_redis(folder)
        stack = Stack({"LLAMALITH_INSTANCE": str(folder / "instance"), "REDIS_URL": f"unix://{socket}",
                       "SECRET_KEY": "screenshots", "LLM_MAX_TOKENS": "120", **MODEL_PATHS}, folder)
        try:
            create_user(stack)
            stack.start_web()
            stack.start_worker()
            with sync_playwright() as playwright:
                browser = launch(playwright)
                capture(browser, stack)
                browser.close()
        finally:
            stack.stop()
            redis.terminate()
            redis.wait()


def capture(browser, stack: Stack) -> None:
    page = browser.new_page(viewport=DESKTOP)
    page.goto(stack.url + "/login")
    shoot(page, "login")

    other_conversations(stack)
    sign_in(page, stack.url)
    page.get_by_role("link", name="New conversation").click()
    send(page, "Write a Python function that reverses a string.")
    expect(page.locator(".bubble.assistant")).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT)
    send(page, "What is the capital of France?")
    expect(page.locator(".bubble.assistant")).to_have_count(2)
    expect(page.locator(".bubble.assistant").last).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT)
    page.locator(".composer details.advanced").evaluate("details => details.open = true")
    page.get_by_label("Message").focus()
    shoot(page, "chat")

    page.emulate_media(color_scheme="dark")
    page.reload()
    shoot(page, "chat-dark")
    page.emulate_media(color_scheme="light")

    page.goto(stack.url + "/conversations")
    shoot(page, "conversations")
    page.goto(stack.url + "/jobs")
    expect(page.locator("#jobs-table")).not_to_have_attribute("hx-trigger", "every 2s", timeout=ANSWER_TIMEOUT)
    shoot(page, "jobs")

    phone = browser.new_page(viewport=PHONE, device_scale_factor=2)
    phone.context.add_cookies(page.context.cookies())
    phone.goto(page.url.replace("/jobs", "/conversations"))
    phone.locator(".conversation .title").first.click()
    shoot(phone, "chat-phone")


def other_conversations(stack: Stack) -> None:
    """A few API jobs, so the lists show more than one conversation and more than one outcome."""
    stack.submit(user_input="Write a haiku about the sea.", session_id="haiku", max_tokens=24)
    stopped = stack.submit(user_input="Tell me a very long story.", session_id="long-story")
    requests.post(f"{stack.url}/api/jobs/{stopped['job_id']}/cancel", headers=stack.headers, timeout=30).raise_for_status()


def shoot(page, name: str) -> None:
    page.wait_for_load_state("networkidle")
    page.screenshot(path=IMAGES / f"{name}.png")
    print("wrote", IMAGES / f"{name}.png")


if __name__ == "__main__":
    main()
