"""Conversations in and out over the API: export as JSON or Markdown, import the JSON form; with the real model, the
real Redis and an in-process worker."""

import json
import re
import subprocess
import time

import pytest
import requests
from rq import Queue
from sqlalchemy import func, select

from app import conversation_files, jobs
from app.jobs import imported, running
from app.extensions import db
from app.keys import create_key
from app.models import Conversation, Job, JobKind, JobStatus, Message
from config import ROOT
from tests.factories import MODEL, add_conversation, add_turn, add_user, conversation_file
from tests.other_submits import OtherSubmits


def submit(client, headers, **body) -> int:
    answer = client.post("/chat/api/submit", json=body, headers=headers)
    assert answer.status_code == 202, answer.json
    return answer.json["job_id"]


def export(client, headers, conversation_id: str, kind: str = "json"):
    return client.get(f"/chat/api/conversations/{conversation_id}/export?format={kind}", headers=headers)


def import_(client, headers, body: bytes | dict, conversation_id: str | None = None):
    query = f"?conversation_id={conversation_id}" if conversation_id else ""
    data = json.dumps(body) if isinstance(body, dict) else body
    return client.post(f"/chat/api/conversations/import{query}", data=data, content_type="application/json",
                       headers=headers)


def without(document: dict, *names: str) -> dict:
    return {name: value for name, value in document.items() if name not in names}


def counts() -> tuple[int, int, int]:
    db.session.expire_all()
    return tuple(db.session.scalar(select(func.count()).select_from(table)) for table in (Conversation, Job, Message))


@pytest.fixture
def other_headers(app) -> dict[str, str]:
    """Another user's key."""
    return {"Authorization": f"Bearer {create_key('other', add_user('bob', password=None).id)}"}


def test_export_then_import_round_trips_a_real_conversation_exactly(client, api_headers, other_headers, work,
                                                                   app):
    submit(client, api_headers, user_input="Name a colour.", session_id="story-1", system_prompt="Be brief.",
           max_tokens=6)
    work()
    submit(client, api_headers, user_input="And another one?", session_id="story-1", temperature=0.5)
    work()
    exported = export(client, api_headers, "story-1")
    assert exported.status_code == 200 and exported.content_type == "application/json"
    assert exported.headers["Content-Disposition"] == 'attachment; filename="name-a-colour.json"'
    original = exported.json
    assert [turn["user"] for turn in original["turns"]] == ["Name a colour.", "And another one?"]
    assert all(turn["assistant"] and turn["job"]["status"] == "done" for turn in original["turns"])
    assert original["turns"][0]["job"]["system_prompt"] == "Be brief."
    assert original["turns"][1]["job"]["params"] == {"temperature": 0.5}
    assert original["turns"][1]["job"]["usage"]["completion_tokens"] > 0
    before = counts()

    imported = import_(client, other_headers, exported.data)  # another user, the same id
    assert imported.status_code == 201, imported.json
    assert imported.json == {"conversation_id": "story-1", "title": "Name a colour.", "turns": 2}
    assert imported.headers["Location"] == "/chat/api/conversations/story-1/export"
    assert without(export(client, other_headers, "story-1").json, "exported_at") == without(original, "exported_at")

    assert import_(client, api_headers, exported.data, "story-1-copy").status_code == 201  # the owner, a new id
    copied = export(client, api_headers, "story-1-copy").json
    assert copied["conversation_id"] == "story-1-copy"
    assert without(copied, "exported_at", "conversation_id") == without(original, "exported_at", "conversation_id")

    assert counts() == tuple(count + added for count, added in zip(before, (2, 4, 8)))
    imported = db.session.scalars(select(Job).where(Job.id > 2)).all()  # ended here before: no attempts, no key
    assert {(job.status, job.attempts, job.worker, job.api_key_id) for job in imported} == {("done", 0, None, None)}
    for queue in Queue.all(connection=app.redis):
        assert queue.count == 0  # nothing was enqueued


def test_a_follow_up_in_an_imported_conversation_has_the_imported_turns_in_its_prompt(client, api_headers, work,
                                                                                       prompts_seen):
    file = conversation_file("pirates", ("My name is Zorblax.", "Ahoy, Zorblax!"), ("I sail a red ship.", "Fine ship."))
    assert import_(client, api_headers, file).status_code == 201
    job_id = submit(client, api_headers, user_input="What is my name?", session_id="pirates")
    work()
    prompt = prompts_seen[-1]
    order = [prompt.index(text) for text in ("My name is Zorblax.", "Ahoy, Zorblax!", "I sail a red ship.",
                                             "Fine ship.", "What is my name?")]
    assert order == sorted(order)
    assert client.get(f"/chat/api/jobs/{job_id}", headers=api_headers).json["status"] == "done"
    turns = export(client, api_headers, "pirates").json["turns"]
    assert [turn["user"] for turn in turns] == ["My name is Zorblax.", "I sail a red ship.", "What is my name?"]


def test_the_markdown_export_is_a_readable_transcript(client, api_headers, owner):
    add_turn("chat-1", "Tell me a *joke*", JobStatus.DONE, "Why did the llama cross the road?", user_id=owner.id,
             system_prompt="Be funny.\nKeep it short.")
    add_turn("chat-1", "Another", JobStatus.ERROR, None, user_id=owner.id, system_prompt="Be funny.\nKeep it short.",
             error_code="timeout", error="generation took too long")
    add_turn("chat-1", "Stop that", JobStatus.CANCELLED, "I was about", user_id=owner.id)
    add_turn("chat-1", "Still waiting", JobStatus.QUEUED, user_id=owner.id)
    answer = export(client, api_headers, "chat-1", "md")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert answer.headers["Content-Disposition"] == 'attachment; filename="tell-me-a-joke.md"'
    text = answer.text
    assert text.startswith("# Tell me a *joke*\n\nConversation `chat-1`, started ")
    assert ("> System prompt: Be funny.\n> Keep it short.\n\n**You**\n\nTell me a *joke*\n\n"
            f"**{MODEL}**\n\nWhy did the llama cross the road?\n") in text
    assert text.count("System prompt") == 2  # noted where it changes: to none for the third turn
    assert f"**You**\n\nAnother\n\n**{MODEL}**\n\n*Error: generation took too long*\n" in text
    assert "I was about\n\n*Stopped: the text above is what was written until then.*" in text
    assert "Still waiting" not in text  # a turn that has not ended is not exported


def test_turns_that_have_not_ended_are_left_out_and_a_message_without_its_job_round_trips(client, api_headers,
                                                                                         owner):
    add_conversation("legacy", "Old days", messages=("A prompt from before jobs",), user_id=owner.id)
    add_turn("legacy", "Answered", JobStatus.DONE, "Yes", user_id=owner.id)
    add_turn("legacy", "Running", JobStatus.PROCESSING, user_id=owner.id)
    original = export(client, api_headers, "legacy").json
    assert [(turn["user"], turn["assistant"], turn["job"] is None) for turn in original["turns"]] == [
        ("A prompt from before jobs", None, True), ("Answered", "Yes", False)]
    assert import_(client, api_headers, original, "legacy-2").status_code == 201
    again = export(client, api_headers, "legacy-2").json
    assert without(again, "exported_at", "conversation_id") == without(original, "exported_at", "conversation_id")


def test_a_job_imported_without_its_end_time_is_shown_without_a_duration(client, api_headers):
    file = conversation_file("no-end", ("Hello", "Hi"))
    file["turns"][0]["job"]["processed_at"] = None  # as Schemathesis sent it: the view answered 500
    assert import_(client, api_headers, file).status_code == 201
    listed = client.get("/chat/api/jobs", headers=api_headers)
    assert listed.status_code == 200 and listed.json["jobs"][0]["usage"]["duration_ms"] is None


REMOVE = object()


def broken(path: str, value) -> bytes:
    """A good file with the field at `path` (dots; list indexes as numbers) set to `value`, or REMOVEd."""
    file = conversation_file("broken", ("Hello", "Hi"))
    *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
    place = file
    for part in parents:
        place = place[part]
    if value is REMOVE:
        del place[last]
    else:
        place[last] = value
    return json.dumps(file).encode()


@pytest.mark.parametrize("body, code, message", [
    (b"{\"format\": ", "invalid_json", "the file is not JSON: EOF while parsing a value"),
    (b"[1, 2]", "invalid_request", "the file: Input should be an object"),
    (b"[" * 100_000 + b"]" * 100_000, "invalid_json", "the file is not JSON: recursion limit exceeded"),
    (broken("version", 2), "invalid_request", "version: Input should be 1"),
    (broken("format", "something.else"), "invalid_request", "format: Input should be 'llamalith.conversation'"),
    (broken("title", REMOVE), "invalid_request", "title: Field required"),
    (broken("turns.0.job.colour", "red"), "invalid_request", "turns.0.job.colour: unknown field"),
    (broken("turns.0.user", "\ud800"), "invalid_json", "the file is not JSON: "),  # a lone surrogate
    (broken("turns.0.job.status", "queued"), "invalid_request", "turns.0.job.status: Input should be 'done'"),
    (broken("turns.0.job.created_at", "2026-01-01 12:00"), "invalid_request",
     "turns.0.job.created_at: must be a time like 2026-01-31T12:00:00.000Z"),
    (broken("turns.0.job.params", {"temperature": float("inf")}), "invalid_request",  # json.dumps writes Infinity
     "turns.0.job.params: temperature: Input should be less than or equal to 5"),
    (broken("turns.0.job.params", {"temperature": 9}), "invalid_request",
     "turns.0.job.params: temperature: Input should be less than or equal to 5"),
    (broken("turns.0.job.usage.prompt_tokens", "12"), "invalid_request",
     "turns.0.job.usage.prompt_tokens: Input should be a valid integer"),
    (broken("turns.0.user", None), "invalid_request", "turns.0: a turn with a job needs the user's message"),
    (broken("turns.0.assistant", "x" * 1_000_001), "invalid_request",
     "turns.0.assistant: String should have at most 1000000 characters"),
    (broken("conversation_id", "has spaces"), "invalid_request", "conversation_id: String should match"),
])
def test_a_malformed_file_is_a_400_naming_the_problem_and_nothing_is_stored(client, api_headers, body, code, message):
    answer = import_(client, api_headers, body)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["code"] == code and answer.json["error"]["message"].startswith(message)
    assert counts() == (0, 0, 0)


def test_a_file_over_the_size_limit_is_a_413_before_it_is_read(client, api_headers, app):
    app.settings.import_max_bytes = 2048
    answer = import_(client, api_headers, conversation_file("big", ("x" * 3000, "y")))
    assert answer.status_code == 413 and answer.json["error"]["code"] == "too_large"
    assert "over the limit of 2048 (IMPORT_MAX_BYTES)" in answer.json["error"]["message"]
    assert counts() == (0, 0, 0)
    assert import_(client, api_headers, conversation_file("small", ("x", "y"))).status_code == 201


def test_a_file_larger_than_other_requests_may_be_is_imported(client, api_headers, app):
    body = conversation_file("long", *[(f"question {n} " + "x" * 1000, "answer " + "y" * 1000) for n in range(600)])
    assert len(json.dumps(body)) > app.config["MAX_CONTENT_LENGTH"]
    assert import_(client, api_headers, body).status_code == 201
    assert counts() == (1, 600, 1200)


def test_an_id_that_exists_is_a_409_and_stores_nothing(client, api_headers, owner):
    add_turn("taken", "Mine", JobStatus.DONE, "Yes", user_id=owner.id)
    before = counts()
    answer = import_(client, api_headers, conversation_file("taken", ("Hello", "Hi")))
    assert answer.status_code == 409 and answer.json["error"]["code"] == "conversation_exists"
    assert "?conversation_id=" in answer.json["error"]["message"]
    assert counts() == before
    assert import_(client, api_headers, conversation_file("taken", ("Hello", "Hi")), "has spaces").status_code == 400


def test_another_users_conversation_is_a_404_and_an_unknown_format_a_400(client, api_headers, other_headers, owner):
    add_turn("mine", "Secret", JobStatus.DONE, "Yes", user_id=owner.id)
    for kind in ("json", "md"):
        answer = export(client, other_headers, "mine", kind)
        assert answer.status_code == 404 and answer.json["error"]["code"] == "not_found"
    answer = export(client, api_headers, "mine", "pdf")
    assert answer.status_code == 400 and answer.json["error"]["message"] == "format must be 'json' or 'md'"
    assert export(client, api_headers, "nothing-here").status_code == 404


def test_the_readme_export_and_import_commands_work_as_written(stack, tmp_path):
    stack.start_web()
    stack.start_worker()
    stack.wait_job(stack.submit(user_input="Tell me a one-line joke.", session_id="story-123")["job_id"])
    readme = (ROOT / "README.md").read_text()
    script = re.search(r"```bash\n(curl[^`]*story\.json[^`]*)```", readme).group(1)
    script = script.replace("http://127.0.0.1:8000/chat", stack.url)
    key = stack.headers["Authorization"].split()[-1]
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env={"KEY": key, "PATH": "/usr/bin:/bin"},
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Tell me a one-line joke." in result.stdout and '"conversation_id":"story-copy"' in result.stdout
    original, copy_ = (stack.get(f"/api/conversations/{name}/export") for name in ("story-123", "story-copy"))
    assert copy_["turns"] == original["turns"]


def test_a_big_import_does_not_hold_up_another_users_submits(stack):
    """10,000 turns, written a chunk at a time into a conversation nobody owns until the last one (one transaction
    held the database for 14 s): another user's submits every 100 ms keep their p99 under a second."""
    stack.start_web()
    other = stack.user("dora")
    body = json.dumps(conversation_file("big", *[(f"Question {n}?", f"Answer {n}.") for n in range(10_000)]))
    with OtherSubmits(stack.url, other) as submits:
        time.sleep(0.5)
        answer = requests.post(stack.url + "/api/conversations/import", data=body, timeout=600,
                               headers={**stack.headers, "Content-Type": "application/json"})
        time.sleep(0.5)
    assert answer.status_code == 201 and answer.json()["turns"] == 10_000, answer.text
    assert not submits.failures and len(submits.latencies) >= 10, submits.failures
    assert submits.p99 < 1.0, submits.summary()
    turns = stack.get("/api/conversations/big/export")["turns"]
    assert [turn["user"] for turn in turns] == [f"Question {n}?" for n in range(10_000)]  # in order


def test_an_import_cut_off_half_way_is_seen_by_nobody_and_removed(client, api_headers, owner, monkeypatch):
    """The request died after its first chunk: what it wrote has no owner, so no list shows it, and the
    reconciler removes it once it is clearly abandoned."""
    monkeypatch.setattr(imported, "IMPORT_CHUNK", 2)
    calls = []

    def die_on_the_second_chunk(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a crash, and not even the cleanup runs: see the finally below
        return real(*args)

    real = imported._add_turns
    monkeypatch.setattr(imported, "_add_turns", die_on_the_second_chunk)
    monkeypatch.setattr(db.session, "execute", _no_deletes(db.session.execute))
    file = conversation_files.parse(json.dumps(conversation_file("cut", *[(f"q{n}", f"a{n}") for n in range(5)])))
    with pytest.raises(KeyboardInterrupt):
        conversation_files.store(owner.id, file)
    monkeypatch.undo()
    db.session.rollback()
    assert counts() == (1, 2, 4)
    assert client.get("/chat/api/conversations/cut/export", headers=api_headers).status_code == 404
    assert db.session.scalar(select(Conversation.user_id)) is None

    assert imported.remove_unfinished_imports() == 0  # not yet: it may still be running
    conversation = db.session.scalar(select(Conversation))
    abandoned = int(time.time() - imported.UNFINISHED_IMPORT.total_seconds()) - 1
    conversation.session_id = f"{imported.IMPORTING}{abandoned}-x"
    db.session.commit()
    assert jobs.reconcile()["unfinished_imports"] == 1
    assert counts() == (0, 0, 0)


def _no_deletes(execute):
    """session.execute, except that DELETE statements do nothing (a process killed has no cleanup)."""
    def execute_but_delete(statement, *args, **kwargs):
        if getattr(statement, "is_delete", False):
            return None
        return execute(statement, *args, **kwargs)
    return execute_but_delete


def test_an_embedding_turn_round_trips_as_an_embedding_and_stays_out_of_prompts(client, api_headers, owner):
    add_turn("c-1", "Hello.", JobStatus.DONE, "Hi!", result="Hi!", user_id=owner.id)
    add_turn("c-1", '["a text"]', JobStatus.DONE, "1 embedding of 576 dimensions", result="[[0.5]]",
             kind=JobKind.EMBEDDING.value, user_id=owner.id)
    exported = export(client, api_headers, "c-1").json
    assert [turn["job"]["kind"] for turn in exported["turns"]] == ["chat", "embedding"]
    assert import_(client, api_headers, exported, "copy").status_code == 201
    copy = db.session.scalar(select(Conversation).where(Conversation.session_id == "copy"))
    assert db.session.scalars(select(Job.kind).where(Job.conversation_id == copy.id).order_by(Job.id)).all() == [
        "chat", "embedding"]
    following = jobs.submit(owner.id, "copy", "And now?", MODEL, None, {})
    assert [(turn.user, turn.assistant) for turn in running.history(following)] == [("Hello.", "Hi!")]
    assert export(client, api_headers, "copy").json["turns"] == exported["turns"]


def test_a_file_without_kinds_imports_chat_turns(client, api_headers):
    file = conversation_file("old", ("Hello.", "Hi!"))
    del file["turns"][0]["job"]["kind"]  # as files were written before jobs had kinds
    assert import_(client, api_headers, file).status_code == 201
    assert db.session.scalar(select(Job.kind)) == "chat"
