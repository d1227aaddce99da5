"""The OpenAI-compatible face, driven by the real `openai` package against real processes (waitress, a worker,
the real model): what an SDK, LangChain or n8n's OpenAI nodes do."""

import openai
import pytest
import requests

from tests.factories import MODEL


@pytest.fixture
def client(sdk) -> openai.OpenAI:
    return sdk


def test_models_are_listed_and_fetched(client):
    assert [model.id for model in client.models.list()] == ["smollm2-135m", "gemma3-270m"]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-17")


def test_a_chat_completion_is_the_real_models_answer_and_a_job(client, stack):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, temperature=0, max_tokens=24,
        messages=[{"role": "system", "content": "You are a helpful assistant. Answer briefly and accurately."},
                  {"role": "user", "content": "What is the capital of France?"}])
    answer = raw.parse()
    assert "Paris" in answer.choices[0].message.content and answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    job = stack.get(f"/api/jobs/{raw.headers['X-Llamalith-Job-Id']}")
    assert (job["status"], job["result"], job["system_prompt"]) == (
        "done", answer.choices[0].message.content, "You are a helpful assistant. Answer briefly and accurately.")


def test_streaming_gives_the_same_text_token_by_token_and_the_usage(client, stack):
    question = [{"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat.completions.create(model=MODEL, temperature=0, max_tokens=24, messages=question)
    stream = client.chat.completions.create(model=MODEL, temperature=0, max_tokens=24, messages=question, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] in ("stop", "length")
    listed = stack.get("/api/jobs")["jobs"]  # both calls are jobs like any other
    assert [job["status"] for job in listed] == ["done", "done"] and listed[0]["result"] == "".join(pieces)


def test_earlier_turns_sent_along_are_the_prompts_history(client, stack):
    answer = client.chat.completions.with_raw_response.create(
        model=MODEL, max_tokens=8, extra_headers={"X-Llamalith-Conversation": "sdk-chat"},
        messages=[{"role": "user", "content": "My name is Zorblax."}, {"role": "assistant", "content": "Hello!"},
                  {"role": "user", "content": "What is my name?"}])
    job = stack.get(f"/api/jobs/{answer.headers['X-Llamalith-Job-Id']}")
    assert job["conversation_id"] == "sdk-chat" and job["user_input"] == "What is my name?"
    assert job["usage"]["prompt_tokens"] > 20  # the earlier turns were in the prompt
    assert stack.get("/api/jobs?conversation_id=sdk-chat")["jobs"][0]["id"] == job["id"]


def test_frequency_and_presence_penalties_reach_the_job_and_the_sampler(client, stack):
    question = [{"role": "user", "content": "List the numbers from one to twenty in words."}]
    plain = client.chat.completions.create(model=MODEL, temperature=0, max_tokens=24, messages=question)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, temperature=0, max_tokens=24,
                                                           messages=question, frequency_penalty=2, presence_penalty=2)
    penalised = raw.parse().choices[0].message.content
    job = stack.get(f"/api/jobs/{raw.headers['X-Llamalith-Job-Id']}")
    assert job["status"] == "done" and job["result"] == penalised
    assert (job["params"]["frequency_penalty"], job["params"]["presence_penalty"]) == (2, 2)
    assert penalised != plain.choices[0].message.content  # llama.cpp's sampler applied them
    for name in ("frequency_penalty", "presence_penalty"):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=MODEL, messages=question, **{name: 2.5})  # OpenAI's bounds: -2..2
        assert refused.value.body["param"] == name


def test_a_bad_key_and_unsupported_features_are_clear_errors(client, stack):
    bad = openai.OpenAI(base_url=stack.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    hello = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=hello, functions=[{"name": "f"}])
    assert refused.value.body["param"] == "functions" and refused.value.body["code"] == "unsupported_parameter"
    for extra in ({"n": 2}, {"logprobs": True}, {"response_format": {"type": "xml"}}):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=MODEL, messages=hello, **extra)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-17", messages=hello)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "assistant", "content": "no question"}])
    error = requests.post(stack.url + "/v1/chat/completions", headers=stack.headers, json={"model": MODEL}).json()
    assert set(error["error"]) == {"message", "type", "code", "param"} and error["error"]["param"] == "messages"


def test_an_unserved_url_or_method_is_an_openai_error_naming_it(client, stack):
    with pytest.raises(openai.NotFoundError) as unknown:
        client.audio.speech.create(model=MODEL, input="hi", voice="alloy")
    assert unknown.value.body == {"message": "Invalid URL (POST /chat/v1/audio/speech)", "type": "invalid_request_error",
                                  "code": "not_found", "param": None}
    wrong = requests.delete(stack.url + "/v1/models", headers=stack.headers, timeout=10)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert wrong.json()["error"] == {"message": "Invalid method (DELETE /chat/v1/models); this URL takes GET, HEAD, "
                                                "OPTIONS", "type": "invalid_request_error",
                                     "code": "method_not_allowed", "param": None}


def test_the_readme_example_runs_as_written(client, stack):
    import re
    import subprocess
    import sys

    from config import ROOT

    script = re.search(r"```python\n(import os\nfrom openai import OpenAI.*?)```", (ROOT / "README.md").read_text(),
                       re.S).group(1).replace("http://127.0.0.1:8000/chat", stack.url)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={"LLAMALITH_KEY": stack.headers["Authorization"].split()[-1], "PATH": "/usr/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_an_idempotent_chat_completion_is_one_job(client, stack):
    hello = [{"role": "user", "content": "Say hello."}]
    first = client.chat.completions.with_raw_response.create(model=MODEL, messages=hello, max_tokens=4,
                                                             extra_headers={"Idempotency-Key": "greet-1"})
    again = client.chat.completions.with_raw_response.create(model=MODEL, messages=hello, max_tokens=4,
                                                             extra_headers={"Idempotency-Key": "greet-1"})
    assert first.headers["X-Llamalith-Job-Id"] == again.headers["X-Llamalith-Job-Id"]
    assert "Idempotent-Replayed" not in first.headers and again.headers["Idempotent-Replayed"] == "true"
    assert first.parse().choices[0].message.content == again.parse().choices[0].message.content
    with pytest.raises(openai.ConflictError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Something else."}],
                                       extra_headers={"Idempotency-Key": "greet-1"})
