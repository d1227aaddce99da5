"""Tool calls through the real stack and the real `openai` package: calls sampled under a grammar, so their arguments
always validate against the function's parameters (app/tool_calls.py); a tool's result goes back into the next
prompt; the OpenAI face's refusals."""

import json

import jsonschema_rs
import openai
import pytest

from app import tool_calls
from app.errors import APIError
from app.openai_format import ChatMessage, parse_chat_request, split_messages
from tests.factories import MODEL

pytestmark = pytest.mark.same_on_postgres

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The current time in a time zone.",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 40}}, "required": ["zone"]}}}
QUESTION = {"role": "user", "content": "What is the weather like in Paris?"}


@pytest.fixture
def client(sdk) -> openai.OpenAI:
    return sdk


def test_a_required_call_validates_and_its_result_gets_a_final_answer(client, stack):
    answer = client.chat.completions.create(model=MODEL, messages=[QUESTION], tools=[WEATHER, TIME],
                                            tool_choice="required", max_tokens=80, temperature=0)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    assert call.function.name in ("get_weather", "get_time")
    parameters = (WEATHER if call.function.name == "get_weather" else TIME)["function"]["parameters"]
    assert jsonschema_rs.validator_for(parameters).is_valid(arguments)
    job = stack.get("/api/jobs")["jobs"][0]
    assert "get_weather" in job["system_prompt"] and job["result"].startswith('{"name"')

    follow_up = client.chat.completions.create(model=MODEL, tools=[WEATHER, TIME], max_tokens=40, temperature=0,
                                               tool_choice="none", messages=[
        QUESTION, choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "sunny"}'}])
    final = follow_up.choices[0]
    assert final.message.content and not final.message.tool_calls and final.finish_reason in ("stop", "length")
    job = stack.get("/api/jobs")["jobs"][0]
    assert job["user_input"] == f'The function {call.function.name} returned: {{"temperature": 21, "sky": "sunny"}}'
    assert "get_weather" not in (job["system_prompt"] or "")  # with `none`, no function is offered


def test_a_named_function_is_called_and_streamed_as_one_call(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What time is it in Tokyo?"}], tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}}, max_tokens=60, temperature=0, stream=True)
    chunks = [chunk.choices[0] for chunk in stream if chunk.choices]
    calls = [call for chunk in chunks for call in chunk.delta.tool_calls or []]
    assert [call.function.name for call in calls] == ["get_time"] and chunks[-1].finish_reason == "tool_calls"
    assert isinstance(json.loads(calls[0].function.arguments)["zone"], str)
    assert not any(chunk.delta.content for chunk in chunks)  # the call's JSON is not streamed as text


def test_auto_answers_either_with_text_or_a_valid_call(client):
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                            tools=[WEATHER], max_tokens=24, temperature=0)
    message = answer.choices[0].message
    if message.tool_calls:
        assert answer.choices[0].finish_reason == "tool_calls"
        assert jsonschema_rs.validator_for(WEATHER["function"]["parameters"]).is_valid(
            json.loads(message.tool_calls[0].function.arguments))
    else:
        assert message.content and not message.content.startswith("{")


@pytest.mark.parametrize("extra, param, named", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}}}]}, "tools", "'minimum'"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "'nope'"),
    ({"tool_choice": "required"}, "tool_choice", "no tools"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format", "together"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name", "pattern"),
])
def test_what_cannot_be_called_is_refused_by_name(client, extra, param, named):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=[QUESTION], **extra)
    assert refused.value.body["param"] == param and named in refused.value.body["message"]


def test_calls_and_results_are_the_prompts_turns():
    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(**QUESTION),
                ChatMessage(role="assistant", content=None, tool_calls=[{"id": "c1", "function": {
                    "name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]),
                ChatMessage(role="tool", tool_call_id="c1", content="21 degrees")]
    system, history, new = split_messages(messages)
    assert (system, new) == ("Be brief.", "The function get_weather returned: 21 degrees")
    assert history == [[QUESTION["content"], tool_calls.written(
        tool_calls.Call("get_weather", {"city": "Paris", "unit": "celsius"}))]]


def test_a_named_choice_without_a_name_is_a_400_not_a_500():  # Schemathesis sent `"function": {}`
    with pytest.raises(APIError) as refused:
        parse_chat_request({"model": MODEL, "messages": [QUESTION], "tools": [WEATHER],
                            "tool_choice": {"type": "function", "function": {}}})
    assert (refused.value.status, refused.value.param) == (400, "tool_choice.function.name")  # what it lacks


def test_the_functions_a_stored_job_could_call_are_read_back_from_its_grammar():
    weather = tool_calls.Tool("get_weather", "The weather", WEATHER["function"]["parameters"])
    time = tool_calls.Tool("get_time", parameters={"type": "object", "properties": {}})  # no description
    for tools, choice in [([weather], tool_calls.REQUIRED), ([weather, time], tool_calls.AUTO),
                          ([weather, time], "get_time")]:
        read = tool_calls.offered_in(tool_calls.params(tools, choice))
        offered = [tool for tool in tools if choice in (tool_calls.AUTO, tool_calls.REQUIRED) or tool.name == choice]
        assert read == offered  # descriptions too
    assert tool_calls.offered_in(tool_calls.params([weather], tool_calls.NONE)) == []
    for schema in ({"type": "object"}, {"anyOf": [{"type": "string"}]}, {"properties": {"name": "x"}},
                   {"anyOf": [tool_calls.params([weather], "auto")["json_schema"], {"type": "integer"}]}):
        assert tool_calls.offered_in({"json_schema": schema}) == []  # a structured output is no call
    assert tool_calls.offered_in(None) == [] and tool_calls.offered_in({}) == []
