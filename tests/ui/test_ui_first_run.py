"""The first minute of a new user, for real: `make run` in a fresh instance folder prints the URL and the admin
password; Chromium signs in with them and asks the default model a question."""

import os
import re
import signal
import subprocess
import time

import pytest
from playwright.sync_api import expect

from config import ROOT
from tests.stack import MODEL_PATHS, free_port

from .browser import send

ANSWER_TIMEOUT = 180_000  # ms


@pytest.fixture
def make_run(tmp_path):
    """`make run` as a newcomer starts it, with its own instance folder and port (and so its own embedded Redis)."""
    port = free_port()
    environ = {**os.environ, **MODEL_PATHS, "LLAMALITH_INSTANCE": str(tmp_path / "instance"), "PORT": str(port),
               "SECRET_KEY": "first-run", "LLM_MAX_TOKENS": "32"}
    for name in ("REDIS_URL", "DATABASE_URL", "MAKEFLAGS", "MAKELEVEL"):
        environ.pop(name, None)
    output = tmp_path / "make-run.log"
    with open(output, "w") as log:
        process = subprocess.Popen(["make", "run"], cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    yield process, output
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    print(output.read_text())  # shown when the test failed


def wait_for_line(output, pattern: str, timeout: float = 120) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := re.search(pattern, output.read_text(), re.M):
            return found
        time.sleep(0.2)
    raise AssertionError(f"'make run' never printed {pattern!r}:\n{output.read_text()}")


def test_make_run_prints_where_to_sign_in_and_the_default_model_answers(make_run, page):
    process, output = make_run
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
