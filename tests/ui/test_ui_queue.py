"""The Queue page (app/ui/queue.py, app/queue_board.py): each model's line, the workers and the last hour; the
viewer's own work only (an admin's: everyone's); its figures of now as /metrics has them; live in Chromium."""

import re
from datetime import timedelta

import requests
from playwright.sync_api import expect
from prometheus_client.parser import text_string_to_metric_families

from app.extensions import db
from app.models import JobStatus, utcnow
from app.queue_board import MINUTES, last_hour
from app.ui.queue import Chart
from tests.factories import MODEL, add_turn, add_user

from .test_ui_streaming import STORY

BASE_MODEL = "gemma3-270m"


def row(page: str, job_id: int) -> str:
    return re.search(rf'<tr data-job-id="{job_id}".*?</tr>', page, re.S).group(0)


def test_the_line_shows_places_and_the_running_jobs_workers(signed_in, user):
    running = add_turn("a", "Hi", JobStatus.PROCESSING, worker="box:1")
    first = add_turn("b", "Next", JobStatus.QUEUED, priority="interactive")
    second = add_turn("c", "Later", JobStatus.QUEUED, priority="batch")
    others = add_turn("d", "Not yours", JobStatus.QUEUED, user_id=add_user("bob").id)
    page = signed_in.get("/chat/queue").text
    assert 'data-status="processing"' in row(page, running.id) and "box:1" in row(page, running.id)
    assert '<td class="num" data-position>1</td>' in row(page, first.id)
    assert '<td class="num" data-position>2</td>' in row(page, second.id)
    assert f'data-job-id="{others.id}"' not in page  # another user's job is only counted
    depth = re.search(rf'data-model="{MODEL}">.*?<span data-depth="interactive">(\d+)</span> interactive,\s*'
                      r'<span data-depth="batch">(\d+)</span>', page, re.S).groups()
    assert depth == ("1", "2")
    assert "No worker is running" in page


def test_its_figures_of_now_are_the_ones_metrics_gives(signed_in, client):
    for n in range(3):
        add_turn(f"c{n}", "Wait", JobStatus.QUEUED, priority="batch")
    page = signed_in.get("/chat/queue").text
    shown = int(re.search(r'<span data-depth="batch">(\d+)</span>', page).group(1))
    scraped = {tuple(sorted(sample.labels.items())): sample.value
               for family in text_string_to_metric_families(client.get("/chat/metrics").get_data(as_text=True))
               for sample in family.samples if sample.name == "llamalith_queue_depth"}
    assert shown == scraped[(("model", MODEL), ("priority", "batch"))] == 3


def test_the_page_refreshes_only_its_board(signed_in):
    fragment = signed_in.get("/chat/queue", headers={"HX-Request": "true"}).text
    assert fragment.startswith('<div id="queue-board" hx-get="/chat/queue" hx-trigger="every 5s"')
    assert "<html" not in fragment


def test_the_last_hour_minute_by_minute(app, user):
    now = utcnow()
    at = lambda minutes_ago: now - timedelta(minutes=minutes_ago, seconds=30)  # noqa: E731
    for minutes_ago, first_token_ms in ((2, 100), (2, 300), (2, 900), (5, 200)):
        add_turn(f"c{minutes_ago}-{first_token_ms}", "Hi", JobStatus.DONE, "Hello", created_at=at(minutes_ago),
                 started_at=at(minutes_ago), processed_at=at(minutes_ago), completion_tokens=30,
                 first_token_ms=first_token_ms)
    add_turn("w", "Waits", JobStatus.QUEUED, created_at=at(3))
    hour = last_hour(now)
    assert len(hour.tokens_per_second) == MINUTES
    assert hour.tokens_per_second[-3] == 90 / 60 and hour.tokens_per_second[-6] == 30 / 60
    assert (hour.first_token_p50[-3], hour.first_token_p95[-3]) == (0.3, 0.9)
    assert hour.first_token_p50[-1] is None
    assert hour.waiting[-5] == 0 and hour.waiting[-3:] == [1, 1, 1]
    db.session.remove()


def test_the_queue_page_lives_in_the_browser(signed_in_page, web):
    page = signed_in_page
    web.start_worker(env={"LLM_PARALLEL": "1"})
    # The base model writes on to max_tokens: the default model's greedy story ends within 5 s on some CPUs.
    running = web.submit(user_input=STORY, max_tokens=2000, temperature=0, model=BASE_MODEL)["job_id"]
    web.wait_job(running, until=lambda job: job["status"] == "processing")
    waiting = web.submit(user_input="Name a colour.", max_tokens=8, model=BASE_MODEL)["job_id"]
    with page.expect_navigation():  # the mark goes on the new page, not on the one leaving
        page.get_by_role("link", name="Queue").click()
    page.evaluate("window.__samePage = true")
    worker = web.query("SELECT worker FROM jobs WHERE id = :id", id=running)[0][0]
    expect(page.locator(f'tr[data-job-id="{waiting}"] [data-position]')).to_have_text("1")
    expect(page.locator(f'tr[data-job-id="{running}"] [data-worker]')).to_have_text(worker)
    expect(page.locator(f'tr[data-job-id="{running}"] [data-sequence]')).to_have_text("sequence 1", timeout=15_000)
    in_use = page.locator(f'tr[data-worker="{worker}"] [data-sequences="{BASE_MODEL}"]')
    expect(in_use).to_have_text(f"{BASE_MODEL}: 1 of 1", timeout=15_000)  # announced every 2 s, shown every 5 s
    metrics = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for family in
               text_string_to_metric_families(requests.get(web.url + "/metrics", timeout=10).text)
               for sample in family.samples}
    assert metrics[("llamalith_queue_depth", (("model", BASE_MODEL), ("priority", "batch")))] == int(
        page.locator(f'[data-model="{BASE_MODEL}"] [data-depth="batch"]').inner_text())
    assert metrics[("llamalith_sequences_in_use", (("model", BASE_MODEL), ("worker", worker)))] == 1

    tokens = page.locator('[data-chart="Tokens per second"] path')
    before = tokens.get_attribute("d")
    requests.post(f"{web.url}/api/jobs/{running}/cancel", headers=web.headers, timeout=30)
    for job_id in [waiting] + [web.submit(user_input=f"Name a colour, {n}.", max_tokens=8)["job_id"]
                               for n in range(9)]:
        assert web.wait_job(job_id)["status"] == "done"
    expect(tokens).not_to_have_attribute("d", before, timeout=15_000)  # redrawn in place
    expect(page.locator('[data-chart="Time to first token"] path').first).not_to_have_attribute("d", "")
    expect(page.locator(f'tr[data-job-id="{waiting}"]')).to_have_count(0)
    assert page.evaluate("window.__samePage") is True


def test_a_chart_line_breaks_where_a_minute_has_no_value():
    chart = Chart("Time to first token", "s", 2, [("p50", [None, 1.0, 2.0, None, 2.0])])
    assert chart.top == 2.0 and chart.now == [("p50", 2.0)]
    assert chart.path(chart.lines[0][1]) == "M75.0 30.0 l0 0 L150.0 2.0 M300.0 2.0 l0 0"
