"""OpenAI's Responses API (/v1/responses) and legacy text completions (/v1/completions), driven by the real `openai`
package against real processes (waitress, a worker, the real model): what n8n's OpenAI Chat Model node (v1.3 calls
the Responses API) and older SDK code do. Answers are short and greedy: the machine is shared."""

import json
import re
import subprocess
import sys

import openai
import pydantic
import pytest
import requests

from config import ROOT
from tests.factories import MODEL

# The Responses wire format over the one submit path: its jobs are stored as /v1's, which the PostgreSQL pass runs.
pytestmark = pytest.mark.same_on_postgres

QUESTION = "What is the capital of France?"


@pytest.fixture
def client(sdk) -> openai.OpenAI:
    return sdk


def job_of(stack, response_id: str) -> dict:
    assert response_id.startswith("resp_")
    return stack.get(f"/api/jobs/{response_id.removeprefix('resp_')}")


def test_a_response_whole_streamed_and_retrieved_is_the_job(client, stack):
    instructions = "You are a helpful assistant. Answer briefly and accurately."
    whole = client.responses.create(model=MODEL, instructions=instructions, input=QUESTION, temperature=0,
                                    max_output_tokens=24)
    job = job_of(stack, whole.id)
    assert (job["status"], job["system_prompt"], job["user_input"]) == ("done", instructions, QUESTION)
    assert whole.output_text == job["result"] and "Paris" in whole.output_text
    assert whole.status in ("completed", "incomplete") and whole.output[0].content[0].type == "output_text"
    assert whole.usage.input_tokens == job["usage"]["prompt_tokens"] > 0
    assert whole.usage.output_tokens == job["usage"]["completion_tokens"] > 0
    assert whole.usage.total_tokens == whole.usage.input_tokens + whole.usage.output_tokens
    assert whole.usage.output_tokens_details.reasoning_tokens == 0

    events = list(client.responses.create(model=MODEL, instructions=instructions, temperature=0, stream=True,
                                          max_output_tokens=24, input=[{"role": "user", "content": [
                                              {"type": "input_text", "text": QUESTION}]}]))
    kinds = [event.type for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          f"response.{whole.status}"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    pieces = [event.delta for event in events if event.type == "response.output_text.delta"]
    final = events[-1].response
    assert len(pieces) > 1 and "".join(pieces) == whole.output_text == final.output_text
    assert job_of(stack, final.id)["result"] == "".join(pieces) == events[-4].text

    short = client.responses.create(model=MODEL, input="Count from one to twenty in words.", max_output_tokens=3)
    assert (short.status, short.incomplete_details.reason, short.usage.output_tokens) == (
        "incomplete", "max_output_tokens", 3)
    again = client.responses.retrieve(whole.id)
    assert (again.id, again.output_text, again.instructions, again.usage.output_tokens) == (
        whole.id, whole.output_text, instructions, whole.usage.output_tokens)
    for unknown in ("resp_999999", "chatcmpl-1", "resp_x"):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(unknown)
    other = openai.OpenAI(base_url=stack.url + "/v1", api_key=stack.user("bob")["Authorization"].split()[-1],
                          max_retries=0)
    with pytest.raises(openai.NotFoundError):  # another user's response is as unknown as none
        other.responses.retrieve(whole.id)


def test_a_previous_response_continues_its_conversation(client, stack):
    first = client.responses.create(model=MODEL, input="My name is Zorblax.", max_output_tokens=8, user="sdk-talk")
    second = client.responses.create(model=MODEL, input="What is my name?", max_output_tokens=8,
                                     previous_response_id=first.id)
    job = job_of(stack, second.id)
    assert job["conversation_id"] == "sdk-talk" and second.previous_response_id == first.id
    assert job["usage"]["prompt_tokens"] > job_of(stack, first.id)["usage"]["prompt_tokens"] + 5
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model=MODEL, input="hi", previous_response_id="resp_999999")
    assert unknown.value.body["param"] == "previous_response_id"


WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]}}


def test_a_function_call_is_an_output_item_and_its_output_gets_the_final_answer(client, stack):
    ask = "What is the weather in Paris?"
    first = client.responses.create(model=MODEL, input=ask, tools=[WEATHER], tool_choice="required",
                                    temperature=0, max_output_tokens=60)
    call = first.output[0]
    assert (call.type, call.name, first.status) == ("function_call", "get_weather", "completed")
    assert isinstance(json.loads(call.arguments)["city"], str) and first.tools[0].name == "get_weather"
    assert first.text.format.type == "text"  # the call's grammar is not the answer's format
    again = client.responses.retrieve(first.id)  # the tools are not stored: their grammar tells them
    assert (again.output[0].type, again.output[0].arguments) == ("function_call", call.arguments)
    assert [(tool.name, tool.description) for tool in again.tools] == [("get_weather", WEATHER["description"])]
    assert again.text.format.type == "text"
    events = list(client.responses.create(model=MODEL, input=ask, tools=[WEATHER], temperature=0, stream=True,
                                          max_output_tokens=60, tool_choice={"type": "function", "name": "get_weather"}))
    kinds = [event.type for event in events]
    assert "response.output_text.delta" not in kinds and kinds[-1] == "response.completed"
    done = next(event for event in events if event.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == json.loads(events[-1].response.output[0].arguments)
    final = client.responses.create(model=MODEL, tools=[WEATHER], tool_choice="none", temperature=0,
                                    max_output_tokens=24, input=[
        {"role": "user", "content": ask}, {"type": "function_call", "call_id": call.call_id, "name": call.name,
                                           "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 degrees"}])
    assert final.output[0].type == "message" and final.output_text
    assert job_of(stack, final.id)["user_input"] == "The function get_weather returned: Sunny, 21 degrees"


def test_what_responses_do_not_serve_is_refused_by_name(client, stack):
    refused = {"tools": [{"type": "web_search"}],
               "reasoning": {"effort": "low"}, "include": ["reasoning.encrypted_content"], "background": True,
               "truncation": "auto"}
    for name, value in refused.items():
        with pytest.raises(openai.BadRequestError) as error:
            client.responses.create(model=MODEL, input="hi", **{name: value})
        assert (error.value.body["code"], error.value.body["param"]) == ("unsupported_parameter", name)
    with pytest.raises(openai.BadRequestError) as error:  # what a grammar cannot enforce, as on chat completions
        client.responses.create(model=MODEL, input="hi", text={"format": {
            "type": "json_schema", "name": "n", "schema": {"type": "integer", "minimum": 1}}})
    assert error.value.body["param"] == "text.format" and "'minimum'" in error.value.body["message"]
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model=MODEL, input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": "http://x/y.png"}]}])
    assert error.value.body["code"] == "unsupported_parameter" and error.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model=MODEL, input=[{"type": "item_reference", "id": "msg_1"}])
    assert error.value.body["code"] == "unsupported_parameter" and error.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model=MODEL, input="hi", tool_choice="required")
    assert (error.value.body["param"], error.value.body["message"]) == (
        "tool_choice", "tool_choice: there are no tools to choose from")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input=[{"role": "assistant", "content": "no question"}])
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-17", input="hi")
    # Fields a client sends with their defaults, as n8n's node does, are fine; nothing is generated for refusals.
    plain = requests.post(stack.url + "/v1/responses", headers=stack.headers, timeout=60, json={
        "model": MODEL, "input": "Say hi.", "max_output_tokens": 2, "tools": [], "store": True, "truncation":
        "disabled", "text": {"format": {"type": "text"}}, "metadata": {"flow": "n8n"}, "parallel_tool_calls": True})
    assert plain.status_code == 200 and plain.json()["metadata"] == {"flow": "n8n"}
    assert len(stack.get("/api/jobs")["jobs"]) == 1


class City(pydantic.BaseModel):
    city: str = pydantic.Field(max_length=20)


def test_a_json_text_format_is_a_structured_output(client, stack):
    parsed = client.responses.parse(model=MODEL, input="Name the capital of France as JSON.", text_format=City,
                                    temperature=0, max_output_tokens=24)
    assert isinstance(parsed.output_parsed, City) and parsed.status == "completed"
    job = job_of(stack, parsed.id)
    assert job["params"]["json_schema"]["properties"]["city"]["maxLength"] == 20
    assert client.responses.retrieve(parsed.id).text.format.type == "json_schema"
    events = list(client.responses.create(model=MODEL, input="A small JSON object, please.", max_output_tokens=4,
                                          text={"format": {"type": "json_object"}}, stream=True))
    final = events[-1].response  # 4 tokens: the start of an object (a grammar shapes each token, slowly)
    assert final.output_text.lstrip().startswith("{") and final.text.format.type == "json_object"
    assert job_of(stack, final.id)["params"]["json_schema"] == {"type": "object"}


def test_a_text_completion_whole_and_streamed_is_the_job(client, stack):
    raw = client.completions.with_raw_response.create(model=MODEL, prompt="The capital of France is",
                                                      temperature=0, max_tokens=12)
    whole = raw.parse()
    job = stack.get(f"/api/jobs/{raw.headers['X-Llamalith-Job-Id']}")
    assert whole.id == f"cmpl-{job['id']}" and whole.object == "text_completion"
    assert whole.choices[0].text == job["result"] and job["user_input"] == "The capital of France is"
    assert whole.choices[0].finish_reason in ("stop", "length") and job["params"]["max_tokens"] == 12
    assert whole.usage.completion_tokens == job["usage"]["completion_tokens"]
    chunks = list(client.completions.create(model=MODEL, prompt=["The capital of France is"], temperature=0,
                                            max_tokens=12, stream=True, stream_options={"include_usage": True}))
    pieces = [chunk.choices[0].text for chunk in chunks if chunk.choices]
    assert len(pieces) > 1 and "".join(pieces) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    default = client.completions.create(model=MODEL, prompt="Tell me a long story.")  # OpenAI's 16 tokens
    assert stack.get(f"/api/jobs/{default.id.removeprefix('cmpl-')}")["params"]["max_tokens"] == 16
    for extra in ({"echo": True}, {"logprobs": 2}, {"best_of": 2}, {"suffix": "end"}, {"n": 2},
                  {"prompt": ["one", "two"]}):
        with pytest.raises(openai.BadRequestError) as error:
            client.completions.create(**{"model": MODEL, "prompt": "hi", **extra})
        assert error.value.body["code"] == "unsupported_parameter"
        assert error.value.body["param"] == next(iter(extra)), extra
    streamed = requests.post(stack.url + "/v1/completions", headers=stack.headers, stream=True, timeout=60,
                             json={"model": MODEL, "prompt": "Hi", "max_tokens": 2, "stream": True})
    lines = [line for line in streamed.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_the_docs_examples_run_as_written(client, stack):
    """Each Python and curl example of docs/openai.md's Responses and Text completions sections."""
    docs = (ROOT / "docs" / "openai.md").read_text()
    sections = docs[docs.index("## Responses"):docs.index("## Errors")]
    key = stack.headers["Authorization"].split()[-1]
    for script in re.findall(r"```python\n(.*?)```", sections, re.S):
        result = subprocess.run([sys.executable, "-c", script.replace("http://127.0.0.1:8000/chat", stack.url)],
                                capture_output=True, text=True, timeout=120,
                                env={"LLAMALITH_KEY": key, "PATH": "/usr/bin"})
        assert result.returncode == 0 and result.stdout.strip(), result.stderr
    for command in re.findall(r"```sh\n(.*?)```", sections, re.S):
        result = subprocess.run(["bash", "-c", command.replace("http://127.0.0.1:8000/chat", stack.url)],
                                capture_output=True, text=True, timeout=120, env={"KEY": key, "PATH": "/usr/bin"})
        assert result.returncode == 0 and json.loads(result.stdout)["usage"], result.stderr
