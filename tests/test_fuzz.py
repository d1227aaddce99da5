"""No input makes a 500: Hypothesis sends arbitrary ids, strings, query parameters, headers, form fields and JSON
bodies to every route, signed in (UI) or with a key (API), and each answer must be below 500."""

import json
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.models import JobStatus
from tests.factories import MODEL, add_turn

PARAMETER = re.compile(r"<(?:(\w+):)?(\w+)>")
NAMES = ["page", "limit", "status", "q", "conversation_id", "last_event_id", "next"]
FIELDS = ["prompt", "model", "system_prompt", "max_tokens", "temperature", "top_p", "title", "name", "password"]
# Mostly values known to have broken parsers somewhere (huge, negative, non-ASCII digits, line breaks), else anything.
# (Hypothesis favours a list's first entries, so the worst come first.)
SPECIAL = st.sampled_from([str(2**64), str(2**63), "²", "١", "/x\r\nSet-Cookie: a=b", "-1", str(10**30), "1e400", "nan",
                           "", "0", "1", "2", "1-0", "done", MODEL, "\r\n", "%00", "../x", "ui-abc", "c"])
texts = st.one_of(SPECIAL, SPECIAL, st.text(max_size=40))
ids = st.one_of(st.integers(min_value=0, max_value=2**70).map(str), texts.filter(lambda text: text != ""))
json_values = st.recursive(st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) |
                           st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                      max_size=4), max_leaves=12)
json_bodies = st.one_of(json_values, st.fixed_dictionaries({"user_input": texts}, optional={
    "session_id": texts, "model": texts, "system_prompt": texts, "max_tokens": json_values, "stop": json_values,
    "temperature": json_values, "priority": texts}))
DEEP = "[" * 100_000 + "]" * 100_000
JSON_BODIES = ("/submit", "/api/conversations/import")  # the routes that read a JSON body of their own


def routes(app, prefix: str) -> list:
    return sorted((rule for rule in app.url_map.iter_rules() if rule.rule.startswith(prefix)
                   and rule.endpoint not in ("ui.static",)), key=lambda rule: rule.rule)


def url_for(rule, values) -> str:
    return PARAMETER.sub(lambda match: quote(next(values), safe=""), rule.rule)


requests = st.tuples(st.integers(min_value=0, max_value=10_000), st.lists(ids, min_size=3, max_size=3),
                     st.fixed_dictionaries({name: texts for name in NAMES}),
                     st.fixed_dictionaries({name: texts for name in FIELDS}), json_bodies,
                     st.one_of(st.none(), texts))


@pytest.fixture
def anything(app):
    """Rows for the ids to find: a conversation "c" of the first user (the key's or the signed-in one) with a
    finished job (1) and a queued one (2)."""
    add_turn("c", "Hello", JobStatus.DONE, "Hi", result="Hi")
    add_turn("c", "Again", JobStatus.QUEUED)


def send(client, rule, choice, extra_headers: dict):
    number, path_values, query, form, body, last_event_id = choice
    method = sorted(rule.methods - {"HEAD", "OPTIONS"})[number % len(rule.methods - {"HEAD", "OPTIONS"})]
    url = url_for(rule, iter(path_values))
    headers = {**extra_headers, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    headers = {name: value for name, value in headers.items() if value.isprintable() and value.isascii()}
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if rule.rule.endswith(JSON_BODIES) \
        else {"data": form}
    response = client.open(url, method=method, query_string=query, headers=headers, **kwargs)
    status = response.status_code
    response.close()  # an event stream gives its slot back
    return status


def all_routes(prefix: str, exclude: str | None = None) -> list[str]:
    from app import create_app
    from config import load_settings
    from tests.stack import MODEL_PATHS

    app = create_app(load_settings({"SECRET_KEY": "x", "LLAMALITH_DEVELOPMENT": "1", **MODEL_PATHS}))
    return [rule.rule for rule in routes(app, prefix) if not (exclude and rule.rule.startswith(exclude))]


def rule_of(app, path: str):
    return next(rule for rule in app.url_map.iter_rules() if rule.rule == path)


EXAMPLES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("path", all_routes("/chat/api") + all_routes("/chat/v1"))
@EXAMPLES
@given(choice=requests)
def test_no_api_input_is_a_500(client, api_headers, anything, app, path, choice):
    assert send(client, rule_of(app, path), choice, api_headers) < 500


@pytest.mark.parametrize("path", all_routes("/chat", exclude="/chat/api"))
@EXAMPLES
@given(choice=requests)
def test_no_page_input_is_a_500(signed_in, anything, app, path, choice):
    headers = {"X-CSRFToken": signed_in.csrf_token("/chat/conversations"), "HX-Request": "true"}
    status = send(signed_in, rule_of(app, path), choice, headers)
    # /readyz answers 503 by design here: these tests run no worker.
    assert status < 500 or (path == "/chat/readyz" and status == 503)


def test_a_body_nested_too_deeply_is_a_400(client, api_headers):
    answer = client.post("/chat/api/submit", data=DEEP, content_type="application/json", headers=api_headers)
    assert answer.status_code == 400 and answer.json["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("method, path, kwargs", [
    ("GET", f"/chat/api/jobs/{2**63}", {}),
    ("GET", f"/chat/api/jobs/{2**64}/events", {}),
    ("POST", f"/chat/api/jobs/{2**63}/cancel", {}),
    ("GET", "/chat/api/jobs?limit=²", {}),
    ("GET", "/chat/api/jobs?limit=١٠", {}),
    ("POST", "/chat/api/submit", {"json": {"user_input": "hi", "session_id": "story-1\n"}}),
    ("POST", "/chat/api/submit", {"json": {"user_input": "hi", "stop": ["\ud800"]}}),
    ("POST", "/chat/api/submit", {"json": {"user_input": "\udfff"}}),
])
def test_the_inputs_that_once_made_500s_are_4xx_in_the_api(client, api_headers, method, path, kwargs):
    answer = client.open(path, method=method, headers=api_headers, **kwargs)
    assert 400 <= answer.status_code < 500 and answer.json["error"]["code"]


@pytest.mark.parametrize("path", [f"/chat/jobs/{2**63}", f"/chat/jobs/{2**64}/answer", "/chat/jobs?page=" + str(2**64),
                                  "/chat/conversations?page=" + str(10**30)])
def test_the_inputs_that_once_made_500s_are_not_500s_in_the_pages(signed_in, path):
    assert signed_in.get(path).status_code in (200, 404)


def test_a_sign_in_destination_with_a_line_break_is_ignored(browser, user):
    answer = browser.post("/chat/login?next=/chat/jobs%0d%0aSet-Cookie:%20a=b",
                          data={"name": "alice", "password": "correct horse battery",
                                "csrf_token": browser.csrf_token()})
    assert answer.status_code == 302 and answer.headers["Location"] == "/chat/conversations"
