"""One submit path (app/intake.py): the same refusal has the same status and code on every face that can meet it,
in process for the whole matrix, and through a real web process for /api and /v1. The statuses and codes are the
table in docs/api.md."""

import re

import pytest
import requests
from sqlalchemy import func, select, update

from app.extensions import db
from app.models import ApiKey, Job, JobStatus
from config import ROOT
from tests.factories import MODEL, add_turn
from tests.test_batches import jsonl, start

REFUSALS = {  # how each refusal is asked for, and its status and code everywhere
    "unknown model": ({"model": "gpt-17"}, 404, "model_not_found"),
    "prompt too long": ({"user_input": "word " * 5000}, 400, "context_length_exceeded"),
    "queue full for the key": ({}, 429, "too_many_queued"),
    "callback not allowed": ({"callback_url": "http://169.254.169.254/latest/meta-data"}, 400,
                             "callback_not_allowed"),
    "idempotency conflict": ({"idempotency_key": "ticket-1042"}, 409, "idempotency_key_reused"),
    "bad parameter": ({"temperature": -1}, 400, "invalid_request"),
}
# What each face can be asked: the chat form has no key (so no queue cap and no Idempotency-Key) and no callback,
# /v1 has no callback, a batch's lines take turns instead of counting against the cap, and regenerate asks again
# for a stored turn.
FACES = {
    "api": set(REFUSALS),
    "v1": set(REFUSALS) - {"callback not allowed"},
    "v1 responses": set(REFUSALS) - {"callback not allowed"},
    "v1 completions": set(REFUSALS) - {"callback not allowed"},
    "chat form": {"unknown model", "prompt too long", "bad parameter"},
    "batch line": {"unknown model", "prompt too long", "bad parameter"},
    "regenerate": {"unknown model", "prompt too long"},
}
# The chat form answers a refusal with itself and the message in words: 422, which htmx swaps in (base.html).
FORM_STATUS = 422


def api_request(ask: dict) -> tuple[dict, dict]:
    """POST /api/submit's body and extra headers for `ask`."""
    body = {"user_input": ask.get("user_input", "Hello"), "model": ask.get("model", MODEL)}
    body.update({name: ask[name] for name in ("temperature", "callback_url") if name in ask})
    return body, idempotency_header(ask)


def v1_request(ask: dict) -> tuple[dict, dict]:
    body = {"model": ask.get("model", MODEL), "messages": [{"role": "user", "content": ask.get("user_input", "Hello")}]}
    body.update({name: ask[name] for name in ("temperature",) if name in ask})
    return body, idempotency_header(ask)


def idempotency_header(ask: dict) -> dict:
    return {"Idempotency-Key": ask["idempotency_key"]} if "idempotency_key" in ask else {}


def openai_code(error: dict) -> str:
    """/v1 keeps OpenAI's error shape."""
    assert set(error) == {"message", "type", "code", "param"}, error
    return error["code"]


def prepare(refusal: str, post) -> None:
    """What must already be there: a job holding the key's only place in the queue, or made with the same
    Idempotency-Key from another body (`post(path, body, headers)` sends to /api as the face's key)."""
    if refusal == "queue full for the key":
        assert post("/api/submit", {"user_input": "First"}, {}).status_code == 202
    if refusal == "idempotency conflict":
        assert post("/api/submit", {"user_input": "First"}, {"Idempotency-Key": "ticket-1042"}).status_code == 202


@pytest.fixture
def ask_client(client, api_headers):
    """Sends to the in-process app as the test's key, capped at one waiting job."""
    db.session.execute(update(ApiKey).values(max_queued=1))
    db.session.commit()

    def post(path: str, body: dict, headers: dict):
        return client.post("/chat" + path, json=body, headers={**api_headers, **headers})

    return post


def through_api(ask_client, ask: dict, fixture) -> tuple[int, str]:
    answer = ask_client("/api/submit", *api_request(ask))
    return answer.status_code, answer.json["error"]["code"]


def through_v1(ask_client, ask: dict, fixture) -> tuple[int, str]:
    answer = ask_client("/v1/chat/completions", *v1_request(ask))
    return answer.status_code, openai_code(answer.json["error"])


def through_v1_responses(ask_client, ask: dict, fixture) -> tuple[int, str]:
    body, headers = v1_request(ask)
    body["input"] = body.pop("messages")[0]["content"]
    answer = ask_client("/v1/responses", body, headers)
    return answer.status_code, openai_code(answer.json["error"])


def through_v1_completions(ask_client, ask: dict, fixture) -> tuple[int, str]:
    body, headers = v1_request(ask)
    body["prompt"] = body.pop("messages")[0]["content"]
    answer = ask_client("/v1/completions", body, headers)
    return answer.status_code, openai_code(answer.json["error"])


def through_chat_form(ask_client, ask: dict, fixture) -> tuple[int, str]:
    fields = {"prompt": ask.get("user_input", "Hello"), "model": ask.get("model", MODEL)}
    fields.update({name: ask[name] for name in ("temperature",) if name in ask})
    answer = fixture("signed_in").htmx("POST", "/chat/conversations/ui-refusals/messages", data=fields)
    return answer.status_code, refused_code(answer.text)


def through_batch_line(ask_client, ask: dict, fixture) -> tuple[None, str]:
    """A batch's lines are refused in its error list, which has codes and no statuses."""
    body, _ = v1_request(ask)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
    batch = start(fixture("client"), fixture("api_headers"), jsonl([line]))
    (error,) = batch["errors"]["data"]
    return None, error["code"]


def through_regenerate(ask_client, ask: dict, fixture) -> tuple[int, str]:
    """The stored turn asks again for what it was submitted with (the model since withdrawn, an input that no
    longer fits)."""
    signed_in = fixture("signed_in")
    turn = add_turn("ui-turn", ask.get("user_input", "Hello"), JobStatus.DONE, "Hi", result="Hi",
                    user_id=fixture("user").id)
    db.session.execute(update(Job).where(Job.id == turn.id).values(model=ask.get("model", MODEL)))
    db.session.commit()
    answer = signed_in.htmx("POST", f"/chat/jobs/{turn.id}/regenerate")
    return answer.status_code, refused_code(answer.text)


def refused_code(html: str) -> str:
    """The pages name the refusal's code as the JSON faces do."""
    return re.search(r'data-refused="([a-z_]+)"', html).group(1)


THROUGH = {"api": through_api, "v1": through_v1, "v1 responses": through_v1_responses,
           "v1 completions": through_v1_completions, "chat form": through_chat_form, "batch line": through_batch_line,
           "regenerate": through_regenerate}


@pytest.mark.parametrize("refusal, face", [(refusal, face) for refusal in REFUSALS for face in FACES
                                           if refusal in FACES[face]])
def test_a_refusal_has_the_same_status_and_code_on_every_face(request, ask_client, refusal, face):
    ask, status, code = REFUSALS[refusal]
    prepare(refusal, ask_client)
    before = db.session.scalar(select(func.count()).select_from(Job))
    expected = {"chat form": FORM_STATUS, "batch line": None}.get(face, status)
    assert THROUGH[face](ask_client, ask, request.getfixturevalue) == (expected, code)
    db.session.expire_all()
    made = db.session.scalar(select(func.count()).select_from(Job)) - before
    assert made == (1 if face == "regenerate" else 0)  # only the turn regenerate asked again for: nothing new


def test_every_refusal_is_in_the_one_table_of_docs_api_md():
    table = (ROOT / "docs" / "api.md").read_text()
    for _, status, code in REFUSALS.values():
        assert re.search(rf"^\| {status} \| `{code}` \|", table, re.M), code


@pytest.mark.slow
def test_the_real_web_process_refuses_alike_on_api_and_v1(stack):
    stack.env["MAX_QUEUED_PER_KEY"] = "1"  # the first job `prepare` makes fills the key's place
    stack.start_web()

    def post(path: str, body: dict, headers: dict):
        return requests.post(stack.url + path, json=body, headers={**stack.headers, **headers}, timeout=60)

    prepare("idempotency conflict", post)
    for refusal in FACES["v1"]:
        ask, status, code = REFUSALS[refusal]
        api, v1 = post("/api/submit", *api_request(ask)), post("/v1/chat/completions", *v1_request(ask))
        assert (api.status_code, api.json()["error"]["code"]) == (status, code), refusal
        assert (v1.status_code, openai_code(v1.json()["error"])) == (status, code), refusal
    assert stack.query("SELECT count(*) FROM jobs") == [(1,)]
