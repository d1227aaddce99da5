"""No input makes a 500: Hypothesis sends arbitrary ids, strings, query parameters, headers, form fields, files and
JSON bodies to every route and method, signed in (UI) or with a key (API), and each answer must be below 500; and the
pages show whatever odd data a job may have stored."""

import io
import json
import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.extensions import db
from app.models import Batch, Job, JobStatus, PromptTemplate, StoredFile, utcnow
from tests.factories import MODEL, add_turn, add_user, first_user_id

pytestmark = pytest.mark.slow  # no processes, but 100 examples for each route: most of the fast tier's time

PARAMETER = re.compile(r"<(?:(\w+):)?(\w+)>")
NAMES = ["page", "limit", "status", "q", "conversation_id", "last_event_id", "next", "after", "purpose", "batch",
         "days", "prompt_template", "name"]
FIELDS = ["prompt", "model", "system_prompt", "max_tokens", "temperature", "top_p", "title", "name", "password",
          "purpose", "text", "prompt_template", "variable-name", "is_admin", "interactive"]
# Mostly values known to have broken parsers somewhere (huge, negative, non-ASCII digits, line breaks), else anything.
# (Hypothesis favours a list's first entries, so the worst come first.)
# The ids of the rows `anything` makes (jobs 1 to 3, conversation "c", template "greeting", a file and a batch).
SPECIAL = st.sampled_from([str(2**64), str(2**63), "²", "١", "/x\r\nSet-Cookie: a=b", "-1", str(10**30), "1e400", "nan",
                           "", "0", "1", "2", "3", "1-0", "done", MODEL, "\r\n", "%00", "../x", "ui-abc", "c",
                           "greeting", "greeting@1", "file-c", "batch_c", "batch", "output", "input",
                           "/v1/chat/completions", "24h", "resp_1", "resp_2"])
texts = st.one_of(SPECIAL, SPECIAL, st.text(max_size=40))
ids = st.one_of(st.integers(min_value=0, max_value=2**70).map(str), texts.filter(lambda text: text != ""))
# JSON text may also hold what no URL or header can: lone surrogates.
json_texts = st.one_of(texts, st.sampled_from(["\ud800", "a\udfffb"]))


def json_trees(floats: st.SearchStrategy) -> st.SearchStrategy:
    return st.recursive(st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | floats |
                        json_texts, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_texts, inner,
                                                                                                max_size=4),
                        max_leaves=12)


# Bodies are sent with json.dumps, which writes infinities as Infinity (not JSON: refused with a 400).
json_values = json_trees(st.floats(allow_nan=False))
# What a JSON column can hold: PostgreSQL's refuses infinities.
stored_json_values = json_trees(st.floats(allow_nan=False, allow_infinity=False))
# callback_url values urlsplit() or .port refuse (or with spaces), and others close to them.
NO_URLS = ["http://[::1", "http://a:99999/", "http://h:+18399/", "http://127.0.0.1:8 /hook", "http://h /x",
           "http://[zz]/", "http://h:١٢/", "http://h:-1/", "http://h\t/", "http://h:80\n/"]
callback_urls = st.one_of(st.sampled_from([*NO_URLS, "https://[::1]x/", "http://h:/", "http:///x"]),
                          texts.map(lambda text: "http://" + text))
json_bodies = st.one_of(json_values, st.fixed_dictionaries({"user_input": json_texts}, optional={
    "session_id": texts, "model": texts, "system_prompt": texts, "max_tokens": json_values, "stop": json_values,
    "temperature": json_values, "priority": texts, "callback_url": callback_urls, "prompt_template": texts,
    "variables": json_values, "messages": json_values, "metadata": json_values}),
    st.fixed_dictionaries({"input_file_id": texts, "endpoint": texts, "completion_window": texts},
                          optional={"metadata": json_values}),
    st.fixed_dictionaries({"name": json_texts, "text": json_texts}),
    # Ollama's: no "stream", so an accepted call streams (with no worker here, a whole answer would wait for ever).
    st.fixed_dictionaries({"model": texts}, optional={
        "messages": st.one_of(json_values, st.lists(st.fixed_dictionaries({"role": st.sampled_from(
            ["user", "assistant", "system", "tool"]), "content": json_values}), max_size=3)),
        "prompt": json_texts, "system": json_values, "options": st.one_of(json_values, st.dictionaries(st.sampled_from(
            ["temperature", "num_predict", "seed", "stop", "mirostat", "num_ctx", "typical_p"]), json_values)),
        "format": json_values, "tools": json_values, "keep_alive": json_values, "name": texts}),
    # /v1/responses and /v1/completions: streamed, so a valid one is answered at once (these tests run no worker).
    st.fixed_dictionaries({"model": texts, "input": json_values, "stream": st.just(True)}, optional={
        name: json_values for name in ("instructions", "max_output_tokens", "temperature", "text", "tools",
                                       "truncation", "tool_choice", "metadata", "user", "previous_response_id")}),
    st.fixed_dictionaries({"model": texts, "input": texts, "previous_response_id": texts, "stream": st.just(True)}),
    st.fixed_dictionaries({"model": texts, "prompt": json_values, "stream": st.just(True)}, optional={
        name: json_values for name in ("max_tokens", "echo", "logprobs", "best_of", "suffix", "n", "stop")}))
DEEP = "[" * 100_000 + "]" * 100_000
# The routes that read a JSON body of their own, and those that take a file (multipart/form-data).
JSON_BODIES = ("/submit", "/api/conversations/import", "/api/prompt-templates", "/v1/batches", "/chat/completions",
               "/v1/responses", "/v1/completions", "/v1/embeddings", "/api/chat", "/api/generate", "/api/show",
               "/api/embed", "/api/embeddings")
FILE_BODIES = ("/v1/files", "/chat/conversations/import")


def routes(app, prefix: str) -> list:
    return sorted((rule for rule in app.url_map.iter_rules() if rule.rule.startswith(prefix)
                   and rule.endpoint not in ("ui.static",)), key=lambda rule: (rule.rule, rule.endpoint))


def url_for(rule, values) -> str:
    return PARAMETER.sub(lambda match: quote(next(values), safe=""), rule.rule)


requests = st.tuples(st.integers(min_value=0, max_value=10_000), st.lists(ids, min_size=3, max_size=3),
                     st.fixed_dictionaries({name: texts for name in NAMES}),
                     st.fixed_dictionaries({name: texts for name in FIELDS}), json_bodies,
                     st.one_of(st.none(), texts))


@pytest.fixture
def environ(environ):
    """No model may embed here: these tests run no worker, and an embedding request (never streamed) that passed
    every check would wait for ever; refused, it still goes through the parsing and every check before the model's
    own."""
    return {**environ, "SMOLLM2_135M_EMBEDDINGS": "false", "GEMMA3_270M_EMBEDDINGS": "false"}


@pytest.fixture
def anything(app):
    """Rows for the ids to find, of the first user (the key's or the signed-in one): a conversation "c" with a
    finished job (1), a queued one (2) and one from the template "greeting" whose stored values are odd (3); a
    batch input file "file-c" and a batch "batch_c" of it."""
    add_turn("c", "Hello", JobStatus.DONE, "Hi", result="Hi")
    add_turn("c", "Again", JobStatus.QUEUED)
    template = PromptTemplate(user_id=first_user_id(), name="greeting", version=1, text="Greet {{name}}.")
    db.session.add(template)
    db.session.commit()
    add_turn("c", "Odd", JobStatus.DONE, "Hi", prompt_template_id=template.id,
             prompt_variables={"name": ["not", "text"], "\ud800": "\udfff"})
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}}
    db.session.add(StoredFile(id="file-c", user_id=first_user_id(), purpose="batch", filename="c.jsonl",
                              bytes=1, content=json.dumps(line).encode()))
    db.session.add(Batch(id="batch_c", user_id=first_user_id(), input_file_id="file-c", endpoint=line["url"],
                         completion_window="24h", status="in_progress", total=1,
                         expires_at=utcnow() + timedelta(hours=24)))
    db.session.commit()


def send(client, rule, choice, extra_headers: dict):
    number, path_values, query, form, body, last_event_id = choice
    method = sorted(rule.methods - {"HEAD", "OPTIONS"})[number % len(rule.methods - {"HEAD", "OPTIONS"})]
    url = url_for(rule, iter(path_values))
    headers = {**extra_headers, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    headers = {name: value for name, value in headers.items() if value.isprintable() and value.isascii()}
    if rule.rule.endswith(JSON_BODIES):
        kwargs = {"data": json.dumps(body), "content_type": "application/json"}
    elif rule.rule.endswith(FILE_BODIES):
        kwargs = {"data": {**form, "file": (io.BytesIO(json.dumps(body).encode()), "x.jsonl")}}
    else:
        kwargs = {"data": form}
    response = client.open(url, method=method, query_string=query, headers=headers, **kwargs)
    status = response.status_code
    response.close()  # an event stream gives its slot back
    return status


def all_routes(prefix: str, exclude: tuple[str, ...] | None = None) -> list[str]:
    """Each route as "endpoint path": one path may have a rule per method (GET and POST /v1/batches)."""
    from app import create_app
    from config import load_settings
    from tests.stack import MODEL_PATHS

    app = create_app(load_settings({"SECRET_KEY": "x", "LLAMALITH_DEVELOPMENT": "1", **MODEL_PATHS}))
    return [f"{rule.endpoint} {rule.rule}" for rule in routes(app, prefix)
            if not (exclude and rule.rule.startswith(exclude))]


def rule_of(app, route: str):
    return next(rule for rule in app.url_map.iter_rules() if f"{rule.endpoint} {rule.rule}" == route)


EXAMPLES = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("path", all_routes("/chat/api") + all_routes("/chat/v1") + all_routes("/chat/ollama"))
@EXAMPLES
@given(choice=requests)
def test_no_api_input_is_a_500(client, api_headers, anything, app, path, choice):
    assert send(client, rule_of(app, path), choice, api_headers) < 500


@pytest.mark.parametrize("path", all_routes("/chat", exclude=("/chat/api", "/chat/ollama")))
@EXAMPLES
@given(choice=requests)
def test_no_page_input_is_a_500(signed_in, anything, app, path, choice):
    headers = {"X-CSRFToken": signed_in.csrf_token("/chat/conversations"), "HX-Request": "true"}
    status = send(signed_in, rule_of(app, path), choice, headers)
    # /readyz answers 503 by design here: these tests run no worker.
    assert status < 500 or (path == "readyz /chat/readyz" and status == 503)


@pytest.mark.parametrize("path", ["/chat/api/submit", "/chat/api/prompt-templates", "/chat/api/conversations/import",
                                  "/chat/v1/batches", "/chat/v1/chat/completions", "/chat/v1/responses",
                                  "/chat/v1/completions"])
@pytest.mark.parametrize("body", [DEEP, '{"input_file_id": "file-c", "metadata": {"a": ' + DEEP + "}}"])
def test_a_body_nested_too_deeply_is_a_400(client, api_headers, path, body):
    answer = client.post(path, data=body, content_type="application/json", headers=api_headers)
    assert answer.status_code == 400 and answer.json["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("url", NO_URLS)
def test_a_callback_url_that_is_no_url_is_a_400(client, api_headers, url):
    answer = client.post("/chat/api/submit", json={"user_input": "hi", "callback_url": url}, headers=api_headers)
    assert answer.status_code == 400 and answer.json["error"]["code"] == "invalid_callback_url", url


def test_a_lone_surrogate_in_a_variable_name_is_refused(client, api_headers):
    assert client.post("/chat/api/prompt-templates", json={"name": "greeting", "text": "Greet {{name}}."},
                       headers=api_headers).status_code == 201
    answer = client.post("/chat/api/submit", headers=api_headers, json={
        "user_input": "hi", "prompt_template": "greeting", "variables": {"name": "Ann", "\ud800": "x"}})
    assert answer.status_code == 400 and answer.json["error"]["code"] == "invalid_request"
    assert db.session.query(Job).count() == 0


@pytest.mark.parametrize("admin", [False, True])
def test_a_job_page_shows_what_an_older_version_stored(browser, user, anything, admin):
    """Versions before the check above stored lone surrogates in variable names (JSON columns keep them)."""
    viewer = "root" if admin else "alice"
    if admin:
        add_user(viewer, password="correct horse battery", is_admin=True)
    job = db.session.get(Job, 3)
    assert browser.login(viewer).status_code == 302
    page = browser.get(f"/chat/jobs/{job.id}")
    assert page.status_code == 200
    assert "\\ud800" in page.text and "[&#34;not&#34;, &#34;text&#34;]" in page.text
    if not admin:
        assert browser.get("/chat/conversations/c").status_code == 200


# Text columns refuse NUL (PostgreSQL) and lone surrogates (both databases) on the way in; JSON columns take more.
stored_texts = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


@settings(EXAMPLES, max_examples=30)
@given(variables=stored_json_values,
       params=st.dictionaries(st.sampled_from(["max_tokens", "temperature", "top_p", "stop"]), stored_json_values),
       text=stored_texts,
       status=st.sampled_from(list(JobStatus)), numbers=st.lists(st.integers(-2**31, 2**31 - 1), min_size=4,
                                                                   max_size=4))
def test_the_job_pages_show_any_stored_job(signed_in, anything, variables, params, text, status, numbers):
    """Whatever a job row holds (written by an older version, a migration or by hand), its pages answer."""
    job = add_turn("c", text, status, text, result=text, error=text or None, system_prompt=text,
                   prompt_template_id=1, prompt_variables=variables, params=params, callback_url=text or None,
                   callback_status="failed", callback_error=text, attempts=numbers[0], prompt_tokens=numbers[1],
                   completion_tokens=numbers[2], first_token_ms=numbers[3])
    for path in (f"/chat/jobs/{job.id}", f"/chat/jobs/{job.id}/answer", "/chat/jobs", "/chat/conversations/c"):
        assert signed_in.get(path).status_code in (200, 302), path  # an answer's fragment may send to its page


@settings(EXAMPLES, max_examples=30)
@given(params=st.dictionaries(st.sampled_from(["max_tokens", "temperature", "top_p", "stop", "other"]),
                              stored_json_values),
       model=st.sampled_from([MODEL, "a-model-no-longer-offered"]), status=st.sampled_from(list(JobStatus)),
       tokens=st.one_of(st.none(), st.integers(-2**31, 2**31 - 1)))
def test_any_stored_job_is_a_response(client, api_headers, anything, params, model, status, tokens):
    """GET /v1/responses/{id} shows any job of the key's user, also one whose model is no longer offered or whose
    params an older version stored."""
    job = add_turn("c", "Hi", status, "Hi", result="Hi", params=params, completion_tokens=tokens)
    job.model = model
    db.session.commit()
    answer = client.get(f"/chat/v1/responses/resp_{job.id}", headers=api_headers)
    assert answer.status_code == 200 and answer.json["id"] == f"resp_{job.id}"


@pytest.mark.parametrize("method, path, kwargs", [
    ("GET", f"/chat/api/jobs/{2**63}", {}),
    ("GET", f"/chat/api/jobs/{2**64}/events", {}),
    ("POST", f"/chat/api/jobs/{2**63}/cancel", {}),
    ("GET", "/chat/api/jobs?limit=²", {}),
    ("GET", "/chat/api/jobs?limit=١٠", {}),
    ("GET", "/chat/v1/batches?limit=%C2%B2", {}),
    ("GET", "/chat/v1/batches?limit=١٠", {}),
    ("POST", "/chat/api/submit", {"json": {"user_input": "hi", "session_id": "story-1\n"}}),
    ("POST", "/chat/api/submit", {"json": {"user_input": "hi", "stop": ["\ud800"]}}),
    ("POST", "/chat/api/submit", {"json": {"user_input": "\udfff"}}),
])
def test_the_inputs_that_once_made_500s_are_4xx_in_the_api(client, api_headers, method, path, kwargs):
    answer = client.open(path, method=method, headers=api_headers, **kwargs)
    assert 400 <= answer.status_code < 500 and answer.json["error"]["code"]


def test_ids_in_paths_are_ascii_digits_only(client, api_headers, anything):
    """int() reads "١" (Arabic-Indic one) as 1: the same job must not have a second address."""
    assert client.get("/chat/api/jobs/1", headers=api_headers).status_code == 200
    assert client.get("/chat/api/jobs/١", headers=api_headers).status_code == 404


@pytest.mark.parametrize("path", [f"/chat/jobs/{2**63}", f"/chat/jobs/{2**64}/answer", "/chat/jobs?page=" + str(2**64),
                                  "/chat/conversations?page=" + str(10**30)])
def test_the_inputs_that_once_made_500s_are_not_500s_in_the_pages(signed_in, path):
    assert signed_in.get(path).status_code in (200, 404)


def test_a_sign_in_destination_with_a_line_break_is_ignored(browser, user):
    answer = browser.post("/chat/login?next=/chat/jobs%0d%0aSet-Cookie:%20a=b",
                          data={"name": "alice", "password": "correct horse battery",
                                "csrf_token": browser.csrf_token()})
    assert answer.status_code == 302 and answer.headers["Location"] == "/chat/conversations"
