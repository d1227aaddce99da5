"""The Ollama-compatible face: driven by the real `ollama` package against real processes (waitress, a worker, the
real model), as n8n's Ollama nodes and other Ollama clients use it; its refusals, which read as /v1's do, through
the test client; and its documentation, which names every route it serves."""

import json
import re
import subprocess
import sys

import ollama
import pytest
import requests

from app.keys import create_key
from config import ROOT
from tests.factories import MODEL, add_user

# Ollama's wire format over the one submit path: its jobs are stored as /v1's, which the PostgreSQL pass runs.
pytestmark = pytest.mark.same_on_postgres

DOC = ROOT / "docs" / "ollama.md"
GREEDY = {"temperature": 0, "num_predict": 12}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def key_of(headers: dict) -> str:
    return headers["Authorization"].split()[-1]


def client_for(stack, headers: dict) -> ollama.Client:
    return ollama.Client(host=stack.url + "/ollama", headers=headers, timeout=120)


@pytest.fixture
def ollama_client(stack) -> ollama.Client:
    stack.start_web()
    stack.start_worker()
    return client_for(stack, stack.headers)


def test_models_are_listed_shown_and_running(ollama_client, stack):
    listed = ollama_client.list().models
    assert [model.model for model in listed] == ["smollm2-135m", "gemma3-270m"]
    smol = listed[0]
    assert smol.size > 50_000_000 and len(smol.digest) == 64 and smol.modified_at is not None
    assert (smol.details.format, smol.details.family, smol.details.quantization_level) == ("gguf", "llama", "Q4_1")
    shown = ollama_client.show(MODEL)
    assert shown.details.family == "llama" and "temperature 0.2" in shown.parameters
    assert shown.modelinfo["general.architecture"] == "llama" and shown.modelinfo["llamalith.n_ctx"] > 0
    assert ollama_client.show(MODEL + ":latest").details.format == "gguf"  # the tag clients add to a bare name
    assert {model.model for model in ollama_client.ps().models} == {"smollm2-135m", "gemma3-270m"}  # the worker loaded both
    assert requests.get(stack.url + "/ollama/api/version", headers=stack.headers, timeout=10).json() == {
        "version": "0.6.0"}
    for call in (lambda: ollama_client.show("llama3"), lambda: ollama_client.chat("llama3", messages=QUESTION)):
        with pytest.raises(ollama.ResponseError) as unknown:
            call()
        assert (unknown.value.status_code, unknown.value.error) == (404, "model 'llama3' not found")
    with pytest.raises(ollama.ResponseError) as unauthorized:
        client_for(stack, {"Authorization": "Bearer wrong"}).list()
    assert unauthorized.value.status_code == 401 and "API key" in unauthorized.value.error
    with pytest.raises(ollama.ResponseError) as refused:
        ollama_client.chat(MODEL, messages=QUESTION, tools=[{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"n": {"type": "quantity"}}}}}])  # the client drops what it does not know
    assert refused.value.status_code == 400 and "tools: function 'f' parameters" in refused.value.error
    with pytest.raises(ollama.ResponseError) as refused:
        ollama_client.generate(MODEL, "hi", options={"typical_p": 0.5})
    assert refused.value.status_code == 400 and "'options.typical_p'" in refused.value.error


def test_chat_and_generate_are_the_real_models_answers_and_the_keys_jobs(ollama_client, stack):
    whole = ollama_client.chat(MODEL, messages=QUESTION, options=GREEDY)
    assert "Paris" in whole.message.content and whole.done and whole.done_reason in ("stop", "length")
    assert whole.prompt_eval_count > 0 and whole.eval_count > 0 and whole.total_duration >= whole.eval_duration > 0
    parts = list(ollama_client.chat(MODEL, messages=QUESTION, options=GREEDY, stream=True))
    pieces = [part.message.content for part in parts if not part.done]
    assert len([piece for piece in pieces if piece]) > 1 and "".join(pieces) == whole.message.content
    assert parts[-1].done and parts[-1].eval_count == whole.eval_count and not parts[:-1][-1].done
    generated = ollama_client.generate(MODEL, "The capital of France is", system="Complete the sentence.",
                                options={"temperature": 0, "num_predict": 4, "stop": ["\n"], "num_ctx": 99999})
    assert generated.response and generated.done_reason in ("stop", "length") and generated.eval_count <= 4
    jobs = stack.get("/api/jobs")["jobs"]  # newest first; each call a job of the key's user
    assert [job["status"] for job in jobs] == ["done"] * 3
    assert (jobs[0]["user_input"], jobs[0]["system_prompt"], jobs[0]["params"]) == (
        "The capital of France is", "Complete the sentence.", {"temperature": 0, "max_tokens": 4, "stop": ["\n"]})
    assert [jobs[2]["result"], jobs[1]["result"]] == [whole.message.content] * 2
    assert all(job["conversation_id"].startswith("ollama-") for job in jobs)
    assert stack.get("/api/jobs", headers=stack.user("mallory"))["jobs"] == []


def test_format_makes_the_answer_json_valid_against_the_schema(ollama_client, stack):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                               "country": {"type": "string", "maxLength": 30}},
              "required": ["city", "country"]}
    answer = ollama_client.chat(MODEL, messages=[{"role": "user", "content": "Where is the Eiffel Tower? As JSON."}],
                                format=schema, options={"temperature": 0, "num_predict": 60})
    place = json.loads(answer.message.content)
    assert set(place) == {"city", "country"} and all(isinstance(value, str) for value in place.values())
    cats = ollama_client.generate(MODEL, "A JSON object about cats:", format="json",
                                  options={"temperature": 0, "num_predict": 80})
    assert isinstance(json.loads(cats.response), dict) and cats.done_reason == "stop"
    assert stack.get("/api/jobs")["jobs"][1]["params"]["json_schema"] == schema


def test_a_tool_call_is_the_messages_call_and_its_result_goes_back_into_the_prompt(ollama_client, stack):
    weather = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                                "parameters": {"type": "object", "properties": {
                                                    "city": {"type": "string", "maxLength": 40}}, "required": ["city"]}}}
    ask = [{"role": "system", "content": "Call get_weather for any question about the weather."},
           {"role": "user", "content": "Call get_weather for Paris."}]
    options = {"temperature": 0, "num_predict": 60}
    answers = [ollama_client.chat(MODEL, messages=ask, tools=[weather], options=options),
               list(ollama_client.chat(MODEL, messages=ask, tools=[weather], options=options, stream=True))]
    whole, parts = answers
    calls = [part.message.tool_calls for part in parts if part.message.tool_calls]
    streamed_text = "".join(part.message.content for part in parts)
    for message_calls, text in ((whole.message.tool_calls, whole.message.content), (calls and calls[0], streamed_text)):
        made = message_calls[0].function  # asked plainly, even the 135M model calls (Ollama has no tool_choice)
        assert made.name == "get_weather" and isinstance(made.arguments["city"], str) and not text
    made = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    final = ollama_client.chat(MODEL, tools=[weather], options=options, messages=[
        *ask, {"role": "assistant", "content": "", "tool_calls": [made]},
        {"role": "tool", "content": "Sunny, 21 degrees", "tool_name": "get_weather"}])
    assert final.message.content or final.message.tool_calls
    job = stack.get("/api/jobs")["jobs"][0]
    assert job["user_input"] == "The function get_weather returned: Sunny, 21 degrees"
    assert job["params"]["json_optional"] is True and "get_weather" in job["system_prompt"]


def test_the_readme_example_runs_as_written(ollama_client, stack):
    script = re.search(r"```python\n(import os\nfrom ollama import Client.*?)```", (ROOT / "README.md").read_text(),
                       re.S).group(1).replace("http://127.0.0.1:8000/chat", stack.url)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={"LLAMALITH_KEY": key_of(stack.headers), "PATH": "/usr/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and stack.get("/api/jobs")["jobs"][0]["user_input"] == "Hello!"


# Refusals, through the test client: the same request refused on /v1 and here has the same status.


def chat_body(face: str, content: str, model: str = MODEL) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return {**body, "stream": True} if face == "v1" else body


def post(client, face: str, headers: dict, content: str = "Hi", model: str = MODEL, **extra):
    path = "/chat/v1/chat/completions" if face == "v1" else "/chat/ollama/api/chat"
    answer = client.post(path, json=chat_body(face, content, model), headers={**headers, **extra})
    answer.close()  # an accepted stream gives its slot back
    return answer


def refused_unknown_model(client, face, headers):
    return post(client, face, headers, model="gpt-17")


def refused_too_long(client, face, headers):
    return post(client, face, headers, content="llamas " * 6000)


def refused_bad_idempotency_key(client, face, headers):
    return post(client, face, headers, **{"Idempotency-Key": "not a key"})


def refused_reused_idempotency_key(client, face, headers):
    post(client, face, headers, content="One", **{"Idempotency-Key": "k-1"})
    return post(client, face, headers, content="Two", **{"Idempotency-Key": "k-1"})


def refused_queue_full(client, face, headers):
    post(client, face, headers)  # queued: no worker runs here
    return post(client, face, headers)


@pytest.mark.parametrize("refusal", [refused_unknown_model, refused_too_long, refused_bad_idempotency_key,
                                     refused_reused_idempotency_key, refused_queue_full])
def test_a_refusal_has_the_same_status_as_on_v1_in_ollamas_shape(client, owner, refusal):
    answers = {}
    for face in ("v1", "ollama"):
        key = create_key(f"{face}-key", owner.id, interactive=True, max_queued=1)
        answers[face] = refusal(client, face, {"Authorization": f"Bearer {key}"})
    v1, mine = answers["v1"], answers["ollama"]
    assert mine.status_code == v1.status_code >= 400 and set(mine.json) == {"error"}
    assert isinstance(mine.json["error"], str) and mine.json["error"]
    assert mine.headers.get("Retry-After") == v1.headers.get("Retry-After")


@pytest.mark.parametrize("body, named", [
    ({"model": MODEL, "messages": QUESTION, "format": {"type": "integer", "minimum": 0}}, "format: schema: 'minimum'"),
    ({"model": MODEL, "messages": QUESTION, "format": "xml"}, "format"),
    ({"model": MODEL, "messages": QUESTION, "think": True}, "'think'"),
    ({"model": MODEL, "prompt": "hi", "images": ["aGk="]}, "'images'"),
    ({"model": MODEL, "prompt": "hi", "raw": True}, "'raw'"),
    ({"model": MODEL, "prompt": "hi", "context": [1, 2]}, "'context'"),
    ({"model": MODEL, "prompt": "hi", "suffix": "end"}, "'suffix'"),
    ({"model": MODEL, "prompt": "hi", "template": "{{ .Prompt }}"}, "'template'"),
    ({"model": MODEL, "prompt": "hi", "colour": "blue"}, "'colour'"),
    ({"model": MODEL, "messages": QUESTION, "prompt": "hi"}, "'prompt'"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}, "'messages.0.images'"),
    ({"model": MODEL, "messages": [{"role": "robot", "content": "42"}]}, "messages.0.role"),
    ({"model": MODEL, "messages": [{"role": "assistant", "content": "hi"}]}, "the last message must be from the user"),
    ({"model": MODEL, "prompt": "hi", "options": {"min_p": 0.1}}, "'options.min_p'"),
    ({"model": MODEL, "prompt": "hi", "options": {"num_predict": 0}}, "options.num_predict"),
    ({"model": MODEL, "prompt": "hi", "options": {"mirostat": 3}}, "options.mirostat"),
    ({"model": MODEL, "prompt": "hi", "options": {"temperature": "hot"}}, "options.temperature"),
    ({"model": MODEL, "prompt": "hi", "options": "fast"}, "options"),
    ({"model": MODEL, "prompt": ["hi"]}, "prompt"),
    ({"model": MODEL, "prompt": "hi", "stream": "maybe"}, "stream"),
    ({"prompt": "hi"}, "model"),
    (["not", "an", "object"], "JSON object"),
])
def test_a_bad_or_unserved_field_is_a_400_naming_it(client, api_headers, body, named):
    path = "/chat/ollama/api/chat" if isinstance(body, dict) and "messages" in body else "/chat/ollama/api/generate"
    answer = client.post(path, json=body, headers=api_headers)
    assert answer.status_code == 400 and named in answer.json["error"], answer.json


@pytest.mark.parametrize("path", ["/chat/ollama/api/chat", "/chat/ollama/api/generate", "/chat/ollama/api/show"])
@pytest.mark.parametrize("data", ["{not json", "[" * 100_000 + "]" * 100_000, "null"])
def test_a_body_that_is_not_a_json_object_is_a_400(client, api_headers, path, data):
    answer = client.post(path, data=data, content_type="application/json", headers=api_headers)
    assert answer.status_code == 400 and isinstance(answer.json["error"], str)


def test_load_time_options_and_keep_alive_are_taken_and_a_request_without_a_prompt_only_loads(client, api_headers):
    answer = client.post("/chat/ollama/api/generate", headers=api_headers, json={
        "model": MODEL, "keep_alive": "5m", "options": {"num_ctx": 8192, "num_thread": 2, "use_mmap": True}})
    assert answer.status_code == 200 and (answer.json["done"], answer.json["done_reason"]) == (True, "load")
    answer = client.post("/chat/ollama/api/chat", headers=api_headers, json={"model": MODEL, "messages": []})
    assert answer.json["message"] == {"role": "assistant", "content": ""} and answer.json["done_reason"] == "load"
    assert client.get("/chat/api/jobs", headers=api_headers).json["jobs"] == []


def test_every_answer_needs_a_key_and_errors_are_ollamas_shape(client, api_headers):
    assert client.get("/chat/ollama/api/tags").json == {"error": client.get("/chat/ollama/api/tags").json["error"]}
    assert client.get("/chat/ollama/api/tags").status_code == 401
    assert client.post("/chat/ollama/api/show", json={"model": "x"}, headers=api_headers).json == {
        "error": "model 'x' not found"}
    assert client.get("/chat/ollama/api/pull", headers=api_headers).status_code == 404
    assert isinstance(client.get("/chat/ollama/api/nothing", headers=api_headers).json["error"], str)
    assert client.get("/chat/ollama/api/version", headers=api_headers).json == {"version": "0.6.0"}
    for path in ("/chat/ollama/api/embed", "/chat/ollama/api/embeddings"):
        answer = client.post(path, json={"model": MODEL, "images": []}, headers=api_headers)
        assert answer.status_code == 400 and answer.json == {"error": "'images' is not a field of this endpoint"}


def test_another_users_key_sees_none_of_the_jobs(client, api_headers, owner):
    answer = client.post("/chat/ollama/api/generate", json={"model": MODEL, "prompt": "Hi"}, headers=api_headers)
    job_id = answer.headers["X-Llamalith-Job-Id"]
    answer.close()
    assert [job["id"] for job in client.get("/chat/api/jobs", headers=api_headers).json["jobs"]] == [int(job_id)]
    other = {"Authorization": f"Bearer {create_key('other', add_user('mallory').id)}"}
    assert client.get("/chat/api/jobs", headers=other).json["jobs"] == []
    assert client.get(f"/chat/api/jobs/{job_id}", headers=other).status_code == 404


def documented_routes() -> set[tuple[str, str]]:
    return {(method, path) for method, path in re.findall(r"^\| `(GET|POST) (/api/[a-z]+)` \|", DOC.read_text(), re.M)}


def test_every_route_is_documented_and_nothing_else(app):
    served = {(method, rule.rule.removeprefix("/chat/ollama")) for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/chat/ollama/") for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served and documented_routes() == served
