"""Every user and key sees only its own work: real processes, two users, each with a key and a browser session."""

import requests

from app.extensions import db
from app.models import Conversation
from tests.factories import MODEL, add_user
from tests.stack import Stack

PASSWORD = "a long password"


def answers(stack: Stack, method: str, path: str, headers: dict | None = None, session=None, **kwargs) -> int:
    send = session.request if session else requests.request
    return send(method, stack.url + path, headers=headers, timeout=30, allow_redirects=False, **kwargs).status_code


def test_another_users_key_and_session_find_none_of_my_work(stack):
    stack.start_web()
    stack.start_worker()
    alice = stack.user("carol", PASSWORD)
    bob = stack.user("bob", PASSWORD)
    job = requests.post(stack.url + "/api/submit", headers=alice, timeout=30,
                        json={"user_input": "Say hi.", "session_id": "shared-name", "max_tokens": 4}).json()
    stack.wait_job(job["id"], headers=alice)
    conversation = stack.query("SELECT id FROM conversations WHERE session_id = 'shared-name'")[0][0]

    for method, path in [("GET", f"/api/jobs/{job['id']}"), ("GET", f"/api/jobs/{job['id']}/events"),
                         ("POST", f"/api/jobs/{job['id']}/cancel"), ("GET", "/api/status/shared-name"),
                         ("GET", "/api/conversations/shared-name/export")]:
        assert answers(stack, method, path, bob) == 404, path
        assert answers(stack, method, path, alice) in (200, 409), path  # 409: cancelling a finished job
    assert requests.get(stack.url + "/api/jobs", headers=bob, timeout=10).json()["jobs"] == []
    assert requests.get(stack.url + "/api/jobs?conversation_id=shared-name", headers=bob, timeout=10).json() == {
        "jobs": []}

    browser = stack.signed_in("bob", PASSWORD)
    for method, path in [("GET", f"/conversations/{conversation}"), ("GET", f"/jobs/{job['id']}"),
                         ("GET", f"/jobs/{job['id']}/answer"), ("POST", f"/conversations/{conversation}/rename"),
                         ("POST", f"/conversations/{conversation}/delete"), ("POST", f"/jobs/{job['id']}/stop"),
                         ("POST", f"/jobs/{job['id']}/regenerate"), ("GET", f"/conversations/{conversation}/export"),
                         ("POST", f"/conversations/{conversation}/messages")]:
        assert answers(stack, method, path, session=browser, data={"title": "mine", "prompt": "hi",
                                                                   "model": MODEL}) == 404, path
    assert "Say hi." not in browser.get(stack.url + "/conversations", timeout=10).text
    assert f"job-row-{job['id']}" not in browser.get(stack.url + "/jobs", timeout=10).text
    assert stack.query("SELECT title FROM conversations WHERE id = :id", id=conversation) == [("Say hi.",)]

    admin = stack.signed_in("carol", PASSWORD)  # carol owns it: she may do all of that
    assert answers(stack, "GET", f"/conversations/{conversation}", session=admin) == 200


def test_an_admin_sees_everyones_work_marked_with_its_owner_but_cannot_change_it(stack):
    stack.start_web()
    stack.user("root", PASSWORD, admin=True)
    dave = stack.user("dave", PASSWORD)
    job = requests.post(stack.url + "/api/submit", headers=dave, json={"user_input": "Dave's question"},
                        timeout=30).json()
    conversation = stack.query("SELECT id FROM conversations")[0][0]
    admin = stack.signed_in("root", PASSWORD)
    listing = admin.get(stack.url + "/conversations", timeout=10).text
    assert "Dave&#39;s question" in listing and '<span class="owner">dave</span>' in listing
    page = admin.get(stack.url + f"/conversations/{conversation}", timeout=10).text
    assert "This is dave’s conversation: you see it as an admin" in page and 'id="composer"' not in page
    assert '<td class="nowrap owner">dave</td>' in admin.get(stack.url + "/jobs", timeout=10).text
    assert answers(stack, "POST", f"/conversations/{conversation}/delete", session=admin) == 404
    assert answers(stack, "POST", f"/jobs/{job['id']}/stop", session=admin) == 404


def test_the_same_session_id_from_two_users_is_two_conversations_with_their_own_history(app, work, prompts_seen):
    from app import jobs

    erin, frank = add_user("erin"), add_user("frank")
    jobs.submit(erin.id, "chat", "My name is Erin.", MODEL, None, {})
    jobs.submit(frank.id, "chat", "My name is Frank.", MODEL, None, {})
    work()
    jobs.submit(erin.id, "chat", "What is my name?", MODEL, None, {})
    jobs.submit(frank.id, "chat", "What is my name?", MODEL, None, {})
    work()
    owners = db.session.execute(db.select(Conversation.user_id).where(Conversation.session_id == "chat")).scalars()
    assert sorted(owners) == sorted([erin.id, frank.id])
    erin_prompt, frank_prompt = prompts_seen[2:]
    assert "My name is Erin." in erin_prompt and "Frank" not in erin_prompt
    assert "My name is Frank." in frank_prompt and "Erin" not in frank_prompt
