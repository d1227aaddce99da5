"""The jobs table (filter, self-refresh while work is active, every column in view) and a job's detail page."""

import re
from datetime import datetime, timedelta

import requests

from app.extensions import db
from app.models import JobStatus

from tests.factories import MODEL, add_turn

from .browser import sign_in


def listed(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<tr id="job-row-(\d+)" data-status="(\w+)">', html)


def test_the_table_lists_jobs_newest_first_with_their_facts(signed_in):
    started = datetime(2026, 1, 1, 12, 0, 0)
    done = add_turn("c", "Tell me a story", JobStatus.DONE, "Once", created_at=started, started_at=started,
                    processed_at=started + timedelta(seconds=2.5), prompt_tokens=12, completion_tokens=8)
    failed = add_turn("c", "Again", JobStatus.ERROR, error="boom")
    page = signed_in.get("/chat/jobs").text
    assert listed(page) == [(str(failed.id), "error"), (str(done.id), "done")]
    row = re.search(rf'<tr id="job-row-{done.id}".*?</tr>', page, re.S).group(0)
    for fact in (f'href="/chat/jobs/{done.id}"', 'href="/chat/conversations/c">Tell me a story</a>', MODEL,
                 '<span class="status done">done</span>', "2026-01-01 12:00</td>", "2.5 s", "12 / 8"):
        assert fact in row


def test_a_running_job_says_how_many_others_its_worker_decodes_with_it(signed_in):
    together = [add_turn(f"c{n}", "Hi", JobStatus.PROCESSING, worker="box:1") for n in range(3)]
    alone = add_turn("d", "Hi", JobStatus.PROCESSING, worker="box:2")
    page = signed_in.get("/chat/jobs").text
    for job in together:
        row = re.search(rf'<tr id="job-row-{job.id}".*?</tr>', page, re.S).group(0)
        assert 'title="decoded together on worker box:1">with 2 others</span>' in row
    assert "with " not in re.search(rf'<tr id="job-row-{alone.id}".*?</tr>', page, re.S).group(0)


def test_the_status_filter(signed_in):
    add_turn("c", "One", JobStatus.DONE, "ok")
    waiting = add_turn("c", "Two", JobStatus.QUEUED)
    assert listed(signed_in.get("/chat/jobs?status=queued").text) == [(str(waiting.id), "queued")]
    assert "No cancelled jobs." in signed_in.get("/chat/jobs?status=cancelled").text
    assert signed_in.get("/chat/jobs?status=weird").status_code == 400


def test_the_table_refreshes_itself_only_while_a_job_is_active(signed_in):
    add_turn("c", "One", JobStatus.DONE, "ok")
    idle = signed_in.get("/chat/jobs").text
    assert "hx-trigger" not in re.search(r'<div id="jobs-table".*?>', idle, re.S).group(0)

    waiting = add_turn("c", "Two", JobStatus.QUEUED)
    busy = signed_in.get("/chat/jobs?status=queued", headers={"HX-Request": "true"}).text
    assert busy.lstrip().startswith('<div id="jobs-table"') and "<html" not in busy
    assert re.search(r"hx-get=\"/chat/jobs\?status=queued\"\s+hx-trigger=\"every 2s\"", busy)

    waiting.status = JobStatus.DONE.value
    db.session.commit()
    settled = signed_in.get("/chat/jobs?status=done", headers={"HX-Request": "true"}).text
    assert "hx-trigger" not in settled and len(listed(settled)) == 2


def test_the_detail_shows_input_system_prompt_params_result_error_and_attempts(signed_in):
    job = add_turn("c", "Write <b>bold</b>", JobStatus.ERROR, "Partial **text**", system_prompt="Be terse.",
                   params={"max_tokens": 50, "temperature": 0.2}, error="generation took too long",
                   error_code="timeout", attempts=2, worker="host:42")
    page = signed_in.get(f"/chat/jobs/{job.id}").text
    for fact in ("Job #1", '<span class="status error">error</span>', "Write &lt;b&gt;bold&lt;/b&gt;", "Be terse.",
                 '"max_tokens": 50', '"temperature": 0.2', "Partial <strong>text</strong>",
                 "generation took too long <code>timeout</code>", "2 (last by worker host:42)"):
        assert fact in page
    assert "hx-trigger" not in page


def test_the_detail_of_an_unfinished_job_refreshes_as_a_whole(signed_in):
    job = add_turn("c", "Hi", JobStatus.QUEUED)
    page = signed_in.get(f"/chat/jobs/{job.id}").text
    assert f'<section id="job-detail" hx-get="/chat/jobs/{job.id}" hx-trigger="every 1s"' in page
    assert page.count("hx-trigger") == 1  # the answer inside does not poll on its own
    fragment = signed_in.get(f"/chat/jobs/{job.id}", headers={"HX-Request": "true"}).text
    assert fragment.lstrip().startswith('<section id="job-detail"')
    assert signed_in.get("/chat/jobs/999").status_code == 404


# The last column's cells, each as (its right edge, the right edge of what the table's scroll container shows), and
# whether the page itself scrolls sideways (it must not: a wide table scrolls inside its container).
LAST_COLUMN = """() => {
  const shown = document.querySelector('.table-scroll').getBoundingClientRect().right;
  const cells = [...document.querySelectorAll('#jobs-table tr > :last-child')];
  return {cells: cells.map(cell => [cell.getBoundingClientRect().right, shown]),
          pageScrolls: document.documentElement.scrollWidth > innerWidth};
}"""


def test_the_admins_table_shows_its_last_column_at_1200_px_and_scrolls_inside_its_box_when_narrower(chromium, web):
    other = web.user("a-second-user-with-a-long-name")
    for headers in (web.headers, other):
        requests.post(web.url + "/api/submit", headers=headers, timeout=10, json={
            "user_input": "Summarise this customer ticket about a parcel that arrived late. " * 4}).raise_for_status()
    context = chromium.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    sign_in(page, web.url)
    page.goto(web.url + "/jobs")
    wide = page.evaluate(LAST_COLUMN)
    assert len(wide["cells"]) == 3 and not wide["pageScrolls"]  # the header and two jobs, each other's owner
    assert all(right <= shown for right, shown in wide["cells"]), wide
    page.set_viewport_size({"width": 700, "height": 800})
    narrow = page.evaluate(LAST_COLUMN)
    assert not narrow["pageScrolls"] and all(right > shown for right, shown in narrow["cells"]), narrow
    context.close()
