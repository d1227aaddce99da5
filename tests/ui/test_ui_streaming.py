"""The chat's live answer in Chromium against real processes: tokens over one event stream while the job runs
(app/static/js/app.js), a dropped stream resumed without a gap, and polling when no stream may be opened."""

import socket
import threading
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import expect

from tests import relays
from tests.stack import free_port, wait_for

from .browser import create_user, send, sign_in

# What the browser draws of a stream: the streams themselves run in the PostgreSQL pass (tests/test_streaming.py).
pytestmark = pytest.mark.same_on_postgres

ANSWER_TIMEOUT = 180_000  # ms
STORY = "Write a very long story about the sea."

# Every version of the live text, in order: the test reads how it grew and what it said before the end replaced it.
WATCH_LIVE_TEXT = """() => {
  window.__seen = [];
  new MutationObserver(() => {
    const live = document.querySelector(".bubble.assistant .live");
    if (live && live.textContent !== window.__seen.at(-1)) {
      window.__seen.push(live.textContent);
    }
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""


def ask(page, prompt: str, max_tokens: int, model: str | None = None) -> None:
    """Greedy, so that the story runs to `max_tokens` (sampled, one may end within seconds)."""
    with page.expect_navigation():  # the watcher goes on the new page, once it has a body (not on the one leaving)
        page.get_by_role("link", name="New conversation").click()
    page.evaluate(WATCH_LIVE_TEXT)
    if model:
        page.get_by_label("Model").select_option(model)
    page.get_by_text("Advanced").click()
    page.get_by_label("Max tokens").fill(str(max_tokens))
    page.get_by_label("Temperature").fill("0")
    send(page, prompt)


def finished(page):
    answer = page.locator(".bubble.assistant")
    expect(answer).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT)
    return answer


def requests_to(page, part: str) -> list:
    """Requests the page makes from now on whose URL has `part`, in order."""
    seen = []
    page.on("request", lambda request: seen.append(request) if part in request.url else None)
    return seen


def test_an_answer_arrives_token_by_token_over_one_stream(signed_in_page, web):
    page = signed_in_page
    web.start_worker()
    made = requests_to(page, "/jobs/")  # in the order the page made them
    ask(page, STORY, max_tokens=100)
    answer = finished(page)
    urls = [request.url for request in made]
    since_the_stream = urls[next(n for n, url in enumerate(urls) if url.endswith("/events")):]
    assert [url.rsplit("/", 1)[1] for url in since_the_stream] == ["events", "answer"], urls  # no polling meanwhile
    seen = page.evaluate("window.__seen")
    assert len(seen) >= 10, seen  # the text grew token by token
    assert all(later.startswith(earlier) for earlier, later in zip(seen, seen[1:]))
    stored = answer.locator("button.copy").get_attribute("data-copy")  # the stored answer, as the server renders it
    assert seen[-1] == stored
    expect(answer.locator(".markdown")).not_to_be_empty()
    expect(answer.locator(".live")).to_have_count(0)


class Cutter:
    """A TCP relay in front of the web process that can drop every connection through it at once, as a proxy
    restarting or a flaky network does."""

    def __init__(self, upstream_port: int):
        self.upstream_port, self.port = upstream_port, free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            end.close()

    def cut(self) -> None:
        dropped, self.open = self.open, []
        for end in dropped:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_a_dropped_stream_resumes_without_a_gap_or_a_repeat(page, web):
    cutter = Cutter(urlsplit(web.url).port)
    url = web.url.replace(f":{cutter.upstream_port}/", f":{cutter.port}/")
    try:
        sign_in(page, url)
        web.start_worker()
        streams = requests_to(page, "/events")
        ask(page, STORY, max_tokens=200)
        wait_for(lambda: page.evaluate("window.__seen.length") >= 5, timeout=ANSWER_TIMEOUT / 1000)
        cutter.cut()
        answer = finished(page)
    finally:
        cutter.close()
    assert len(streams) >= 2  # the first, and EventSource's own reconnection
    resumed = streams[1].all_headers().get("last-event-id")
    assert resumed, "the reconnection did not say where it had got to"
    seen = page.evaluate("window.__seen")
    assert all(later.startswith(earlier) for earlier, later in zip(seen, seen[1:]))  # nothing repeated
    assert seen[-1] == answer.locator("button.copy").get_attribute("data-copy")  # nothing missing


def test_over_the_stream_caps_the_answer_is_polled(page, stack):
    """The only stream slot of the web process is taken by an API client, so the page's stream is refused."""
    create_user(stack)
    stack.env.update(SSE_MAX_STREAMS="1", WEB_PROCESSES="1")
    stack.start_web()
    # A job for a model no worker serves here: its stream stays open for the whole test.
    waiting = stack.submit(user_input="Hold the stream slot.", model="gemma3-270m")["job_id"]
    holder = requests.get(f"{stack.url}/api/jobs/{waiting}/events", headers=stack.headers, stream=True, timeout=30)
    try:
        assert holder.status_code == 200
        sign_in(page, stack.url)
        streams, fetches = requests_to(page, "/events"), requests_to(page, "/answer")
        ask(page, STORY, max_tokens=100)
        stack.start_worker("--models", "smollm2-135m")
        finished(page)
        assert [request.response().status for request in streams] == [429]
        assert any("poll=1" in request.url for request in fetches)
    finally:
        holder.close()


def test_an_answer_streaming_in_fits_every_width(chromium, web):
    """375, 768 and 1280 px wide, light and dark: the growing answer wraps; the page never scrolls sideways."""
    web.start_worker()
    for scheme, width in [(scheme, width) for scheme in ("light", "dark") for width in (375, 768, 1280)]:
        context = chromium.new_context(viewport={"width": width, "height": 800}, color_scheme=scheme)
        page = context.new_page()
        sign_in(page, web.url)
        ask(page, STORY + " Use very long words like incomprehensibilities.", max_tokens=200)
        expect(page.locator(".bubble.assistant .live")).not_to_be_empty(timeout=ANSWER_TIMEOUT)
        wait_for(lambda: len(page.evaluate("window.__seen.at(-1) ?? ''")) > 200, timeout=ANSWER_TIMEOUT / 1000)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (scheme, width)
        context.close()


def test_behind_a_buffering_proxy_the_answer_is_polled(page, web):
    with relays.relay(web.url) as url:
        sign_in(page, url)
        web.start_worker()
        # It must run well past the page's 5 s wait for the stream: the default model's greedy story ends after
        # 15 s on one CPU and 5 s on another, while the base model writes on to max_tokens (~14 s).
        ask(page, STORY, max_tokens=1000, model="gemma3-270m")
        # The stream's `ready` never gets through in time, so the running bubble polls, long before the end.
        polling = page.locator('.bubble.assistant[data-status="processing"][hx-get$="poll=1"]')
        expect(polling).to_have_count(1, timeout=ANSWER_TIMEOUT)
        finished(page)
