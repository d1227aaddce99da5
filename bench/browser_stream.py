"""The chat's live answer (issue 21): how soon a token written to Redis is visible in the page, and how many requests
an answer costs, streamed over Server-Sent Events against polled twice a second, in one run.

    .venv/bin/python bench/browser_stream.py [--answers 3] [--max-tokens 100]

A real stack (web, one worker, the default model, an embedded Redis) and Debian's Chromium. Each answer is a new
conversation's first turn, alternately streamed (the page as it is) and polled (its `/events` requests answered
429 by the browser itself, so the page falls back to polling, as over the stream caps). A MutationObserver in the
page records when its answer's visible text grows (`performance.timeOrigin + now()`, the machine's clock); the job's
Redis stream gives when each piece of text was written (its entry ids are Redis's clock in ms, the same machine's).
A piece's delay runs from its write to the first moment the page shows at least as many characters as were
written up to it (whitespace not counted: the polled bubble shows rendered Markdown). Requests per answer: those
the page made for it (its stream or its polls, and the final fetch) from the send to the end.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.sync_api import expect, sync_playwright  # noqa: E402
from redis import Redis  # noqa: E402

from app.streams import stream_key  # noqa: E402
from bench.load import percentile, web_stack  # noqa: E402
from bench.summary import summary  # noqa: E402
from tests.ui.browser import create_user, launch, send, sign_in  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper."
WATCH = """() => {
  window.__grew = [];
  new MutationObserver(() => {
    const bubble = document.querySelector(".bubble.assistant");
    const shown = bubble ? (bubble.querySelector(".live, .markdown")?.textContent ?? "") : "";
    const length = shown.replace(/\\s/g, "").length;
    if (length > (window.__grew.at(-1)?.[1] ?? 0)) {
      window.__grew.push([performance.timeOrigin + performance.now(), length]);
    }
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""


def written(redis: Redis, job_id: int) -> list[tuple[float, int]]:
    """(ms, non-whitespace characters written so far) per token entry of the job's stream."""
    total, points = 0, []
    for entry_id, fields in redis.xrange(stream_key(job_id)):
        if b"t" in fields:
            total += len("".join(fields[b"t"].decode().split()))
            points.append((int(entry_id.split(b"-")[0]), total))
    return points


def delays(writes: list[tuple[float, int]], shown: list[tuple[float, int]]) -> list[float]:
    """Per write, ms until the page showed as much; writes the page never showed in full count to its last change
    (a rendered character or two may differ from the raw text)."""
    return [next((at for at, length in shown if length >= total), shown[-1][0]) - written_at
            for written_at, total in writes]


def answer(page, stack, max_tokens: int, polled: bool) -> tuple[list[float], int]:
    """One answer's delays (ms, one per piece written) and the requests the page made for it."""
    made = []

    def seen(request) -> None:
        if "/jobs/" in request.url:
            made.append(request.url)

    page.on("request", seen)
    try:
        page.get_by_role("link", name="New conversation").click()
        page.evaluate(WATCH)
        page.get_by_text("Advanced").click()
        page.get_by_label("Max tokens").fill(str(max_tokens))
        send(page, PROMPT)
        bubble = page.locator(".bubble.assistant")
        expect(bubble).to_have_attribute("data-status", "done", timeout=300_000)
        page.wait_for_load_state("networkidle")
    finally:
        page.remove_listener("request", seen)
    job_id = int(bubble.get_attribute("data-job-id"))
    writes = written(Redis.from_url(stack.env["REDIS_URL"]), job_id)
    assert ("poll=1" in " ".join(made)) == polled, made
    return delays(writes, page.evaluate("window.__grew")), len([url for url in made if f"/jobs/{job_id}/" in url])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=3, help="answers of each kind, alternated")
    parser.add_argument("--max-tokens", type=int, default=100)
    args = parser.parse_args()
    results = {False: ([], []), True: ([], [])}  # polled? -> (delays, requests per answer)
    with web_stack() as stack, sync_playwright() as playwright:
        create_user(stack)
        stack.start_worker()
        browser = launch(playwright)
        page = browser.new_page()
        sign_in(page, stack.url)
        for n in range(2 * args.answers):
            polled = n % 2 == 1
            page.unroute("**/events")
            if polled:
                page.route("**/events", lambda route: route.fulfill(status=429, body="too many streams"))
            waited, requests = answer(page, stack, args.max_tokens, polled)
            results[polled][0].extend(waited)
            results[polled][1].append(requests)
            print(f"{'polled  ' if polled else 'streamed'}: {len(waited)} pieces, delay p50 "
                  f"{percentile(waited, 50):.0f} ms, p95 {percentile(waited, 95):.0f} ms, {requests} requests",
                  flush=True)
            time.sleep(1)
        browser.close()
    (streamed, streamed_requests), (polled, polled_requests) = results[False], results[True]
    for q in (50, 95):
        summary(f"token visible in the page, p{q} ms, streamed vs polled", percentile(streamed, q),
                percentile(polled, q), "-")
    summary("requests per answer, streamed vs polled", statistics.mean(streamed_requests),
            statistics.mean(polled_requests), "-")


if __name__ == "__main__":
    main()
