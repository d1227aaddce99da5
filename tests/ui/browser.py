"""Driving Chromium against a live stack: shared by the browser tests and `make screenshots`."""

from pathlib import Path

from tests.factories import NAME, PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def launch(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def create_user(stack, name: str = NAME, password: str = PASSWORD) -> None:
    """As an operator does: `flask --app wsgi users create NAME --password-stdin`."""
    stack.cli("users", "create", name, "--password-stdin", input=password + "\n")


def sign_in(page, url: str, name: str = NAME, password: str = PASSWORD) -> None:
    page.goto(url + "/login")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url + "/conversations")


def send(page, prompt: str) -> None:
    """Type a prompt into the chat and press Enter."""
    box = page.get_by_label("Message")
    box.fill(prompt)
    box.press("Enter")
