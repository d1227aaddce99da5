"""`make screenshots`: pictures of the UI for the docs, taken in Chromium from a real stack (Redis, web,
worker, the real model) in a temporary folder, as the browser tests run it. Writes docs/images/*.png, and the chat
(mid-answer), queue, jobs and keys pages at 375, 768 and 1280 px wide, light and dark, into
instance/screenshots/ (24 pictures to look through, not kept in git), each checked for sideways scrolling."""

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
MATRIX = ROOT / "instance" / "screenshots"
WIDTHS = (375, 768, 1280)
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

    page.goto(stack.url + "/queue")
    shoot(page, "queue")

    phone = browser.new_page(viewport=PHONE, device_scale_factor=2)
    phone.context.add_cookies(page.context.cookies())
    phone.goto(stack.url + "/conversations")
    phone.locator(".conversation .title").first.click()
    shoot(phone, "chat-phone")

    matrix(browser, stack, page.context.cookies())


def matrix(browser, stack: Stack, cookies: list) -> None:
    """Each width and scheme: the chat while an answer streams in, then the queue, jobs and keys pages."""
    MATRIX.mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        for width in WIDTHS:
            context = browser.new_context(viewport={"width": width, "height": 800}, color_scheme=scheme)
            context.add_cookies(cookies)
            page = context.new_page()
            page.goto(stack.url + "/conversations/new")
            send(page, "Tell me a long story about a lighthouse.")
            expect(page.locator(".bubble.assistant .live")).not_to_be_empty(timeout=ANSWER_TIMEOUT)
            look(page, f"chat-{width}-{scheme}")
            for name in ("queue", "jobs", "keys"):
                page.goto(f"{stack.url}/{name}")
                look(page, f"{name}-{width}-{scheme}")
            context.close()


def look(page, name: str) -> None:
    """A picture for the matrix, after checking the page does not scroll sideways."""
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    if overflow > 0:
        raise AssertionError(f"{name}: the page is {overflow} px wider than the window")
    page.screenshot(path=MATRIX / f"{name}.png", full_page=True)


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
