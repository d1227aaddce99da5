"""Structured outputs through the real stack and the real `openai` package: answers sampled under a grammar compiled
from a JSON schema (app/llm/grammar.py) parse and validate, even from the 135M model; what a grammar cannot enforce
is refused by name."""

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema_rs
import openai
import pytest

from app.llm import grammar
from tests.factories import MODEL

pytestmark = pytest.mark.same_on_postgres

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "job": {"enum": ["farmer", "sailor", "baker", "teacher", "other"]},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 1, "maxItems": 2},
        "retired": {"type": "boolean"},
    },
    "required": ["name", "age", "job", "hobbies", "retired"],
}
PROMPTS = ["a farmer from Kansas", "a retired sailor", "a young baker in Paris", "a teacher who paints",
           "my grandmother", "a famous explorer", "a child who likes trains", "a musician from Lagos",
           "a chess champion", "a lighthouse keeper"]


@pytest.fixture
def client(sdk) -> openai.OpenAI:
    return sdk


def test_answers_to_ten_prompts_parse_and_validate_against_the_schema(client, stack):
    def describe(who: str) -> str:
        answer = client.chat.completions.create(
            model=MODEL, max_tokens=200, messages=[{"role": "user", "content": f"Describe {who} as JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
        assert answer.choices[0].finish_reason == "stop"  # the grammar ended it, not max_tokens
        return answer.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:  # a worker decodes several at once; a key may wait on 4 (readers_per_key)
        answers = list(pool.map(describe, PROMPTS))
    validator = jsonschema_rs.validator_for(PERSON)
    people = [json.loads(answer) for answer in answers]
    assert all(validator.is_valid(person) for person in people), answers
    assert len({person["name"] for person in people}) > 1  # the model's own answers, not one template
    job = stack.get("/api/jobs")["jobs"][0]
    assert job["params"]["json_schema"] == PERSON  # the job records what it was asked


def test_json_object_is_any_object_and_the_api_face_takes_a_schema_too(client, stack):
    # Greedy, with room to spare: any object may hold a string that goes on and on, and a sampled one once ran past
    # 120 tokens, so the grammar never got to close it (finish_reason "length", as OpenAI's would be).
    answer = client.chat.completions.create(model=MODEL, max_tokens=400, temperature=0, messages=[
        {"role": "user", "content": "Give me a small JSON object."}], response_format={"type": "json_object"})
    assert answer.choices[0].finish_reason == "stop", answer.choices[0].message.content
    assert isinstance(json.loads(answer.choices[0].message.content), dict)
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3}
    job = stack.submit(user_input="Three numbers, please.", json_schema=schema, max_tokens=100)
    numbers = json.loads(stack.wait_job(job["job_id"])["result"])
    assert jsonschema_rs.validator_for(schema).is_valid(numbers)


@pytest.mark.parametrize("schema, named", [
    ({"type": "integer", "minimum": 0}, "'minimum'"),
    ({"type": "object", "properties": {"mail": {"type": "string", "format": "email"}}}, "'email'"),
    ({"$ref": "https://example.com/schema.json"}, "$ref"),
    ({"type": "object", "properties": {"a": {"type": "number", "multipleOf": 2}}}, "properties.a: 'multipleOf'"),
])
def test_what_a_grammar_cannot_enforce_is_refused_by_name(client, schema, named):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert refused.value.body["param"] == "response_format" and named in refused.value.body["message"]


def test_every_supported_keyword_compiles():
    schema = {"$defs": {"tag": {"type": "string", "pattern": "^[a-z]+$"}}, "type": "object", "properties": {
        "when": {"type": "string", "format": "date-time"}, "id": {"type": "string", "format": "uuid"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}}, "pair": {"prefixItems": [
            {"type": "number"}, {"type": ["string", "null"]}]}, "either": {"anyOf": [{"const": 1}, {"enum": ["a"]}]},
        "extra": {"type": "object", "additionalProperties": {"type": "boolean"}}}, "required": ["when"]}
    assert "root ::=" in grammar.check(schema)
