"""The Batches page: progress that follows the batch, its jobs, Cancel, the files; in Chromium against real
processes, the progress bar moving while the real model answers, and the output downloaded at the end."""

import io
import json
import time

import requests
from playwright.sync_api import expect
from sqlalchemy import select

from app.extensions import db
from app.keys import create_key
from app.models import Batch
from tests.factories import MODEL, add_user

ANSWER_TIMEOUT = 180_000  # ms


def batch_file(count: int, max_tokens: int = 8, **body) -> bytes:
    return "".join(json.dumps({"custom_id": f"row-{i}", "method": "POST", "url": "/v1/chat/completions", "body": {
        "model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": f"Describe the number {i}."}],
        **body}}) + "\n" for i in range(count)).encode()


def start_batch(stack, content: bytes) -> str:
    """Over HTTP, as a client of the live stack; the batch's id."""
    uploaded = requests.post(stack.url + "/v1/files", headers=stack.headers, timeout=30,
                             files={"file": ("rows.jsonl", content)}, data={"purpose": "batch"}).json()
    return requests.post(stack.url + "/v1/batches", headers=stack.headers, timeout=30, json={
        "input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}).json()["id"]


def start_in_process(client, user, count: int = 3) -> str:
    headers = {"Authorization": f"Bearer {create_key('batch-key', user.id)}"}
    uploaded = client.post("/chat/v1/files", headers=headers, content_type="multipart/form-data",
                           data={"purpose": "batch", "file": (io.BytesIO(batch_file(count)), "rows.jsonl")}).json
    return client.post("/chat/v1/batches", headers=headers, json={
        "input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}).json["id"]


def test_the_page_shows_progress_links_its_jobs_and_follows_running_batches(signed_in, user):
    batch_id = start_in_process(signed_in, user)
    page = signed_in.get("/chat/batches").text
    assert f'<code>{batch_id}</code>' in page and 'hx-trigger="every 2s"' in page
    assert '<progress max="3" value="0"' in page and "0 done · 0 failed · 3 in all" in page
    assert f'href="/chat/jobs?batch={batch_id}"' in page and ">Cancel</button>" in page
    jobs_page = signed_in.get(f"/chat/jobs?batch={batch_id}").text
    assert jobs_page.count('data-status="queued"') == 3 and f"of batch {batch_id}" in jobs_page


def test_cancel_in_the_ui_ends_the_batch_and_offers_its_error_file(signed_in, user):
    batch_id = start_in_process(signed_in, user)
    token = signed_in.csrf_token("/chat/batches")
    answer = signed_in.post(f"/chat/batches/{batch_id}/cancel", data={"csrf_token": token})
    assert answer.status_code == 303
    page = signed_in.get("/chat/batches").text
    assert 'data-status="cancelled"' in page and 'hx-trigger="every 2s"' not in page
    errors = signed_in.get(f"/chat/batches/{batch_id}/errors.jsonl")
    assert errors.headers["Content-Disposition"] == f'attachment; filename="{batch_id}_errors.jsonl"'
    assert [json.loads(row)["error"]["code"] for row in errors.text.splitlines()] == ["batch_cancelled"] * 3
    assert signed_in.get(f"/chat/batches/{batch_id}/output.jsonl").status_code == 404  # nothing was answered


def test_another_users_batch_is_a_404_and_an_admin_sees_it_read_only(signed_in, user, app):
    stranger = add_user("bob", password=None)
    batch_id = start_in_process(signed_in, stranger)
    assert batch_id not in signed_in.get("/chat/batches").text
    token = signed_in.csrf_token("/chat/batches")
    assert signed_in.post(f"/chat/batches/{batch_id}/cancel", data={"csrf_token": token}).status_code == 404
    assert signed_in.get(f"/chat/batches/{batch_id}/input.jsonl").status_code == 404
    user.is_admin = True
    db.session.commit()
    page = signed_in.get("/chat/batches").text
    assert batch_id in page and ">Cancel</button>" not in page and "bob" in page
    assert signed_in.get(f"/chat/batches/{batch_id}/input.jsonl").status_code == 200
    assert db.session.scalar(select(Batch.status)) == "in_progress"


def test_the_progress_bar_moves_and_the_output_downloads_at_the_end(signed_in_page, web):
    page = signed_in_page
    # Greedy answers run to max_tokens: the batch takes ~15 s (four lines at once), several of the bar's 2 s refreshes.
    batch_id = start_batch(web, batch_file(10, max_tokens=160, temperature=0))
    page.get_by_role("link", name="Batches").click()
    row = page.locator(f"#batch-{batch_id}")
    expect(row.locator(".counts")).to_contain_text("0 done · 0 failed · 10 in all")
    web.start_worker()
    seen = set()
    deadline = time.monotonic() + ANSWER_TIMEOUT / 1000
    while row.get_attribute("data-status") != "completed" and time.monotonic() < deadline:
        seen.add(int(row.locator("progress").get_attribute("value")))
        page.wait_for_timeout(100)
    expect(row).to_have_attribute("data-status", "completed")
    assert len(seen - {0, 10}) >= 1, seen  # the bar moved while the batch ran, without a reload
    expect(row.locator("progress")).to_have_attribute("value", "10")
    with page.expect_download() as download:
        row.get_by_role("link", name="Output").click()
    rows = [json.loads(line) for line in open(download.value.path()).read().splitlines()]
    assert sorted(line["custom_id"] for line in rows) == sorted(f"row-{i}" for i in range(10))
    assert all(line["response"]["body"]["choices"][0]["message"]["content"] for line in rows)
