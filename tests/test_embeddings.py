"""Embeddings, driven by the real `openai` and `ollama` packages against real processes (waitress, a worker, the
real model): each request one job through the queue, the vectors the model's own (mean-pooled, unit length), and
every refusal naming its field."""

import base64
import json
import math
import struct

import ollama
import openai
import pytest
import requests

from tests.factories import MODEL
from tests.stack import MODEL_PATHS

DIMENSIONS = 576  # SmolLM2-135M's hidden size
N_CTX = 256  # the smallest context: an input longer than it is cut in a second (this machine read ~100 tokens/s)
SIMILAR = ["The cat sits on the mat.", "A cat is sitting on a rug."]
UNRELATED = "Stock markets fell sharply today."


def key_of(headers: dict) -> str:
    return headers["Authorization"].split()[-1]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture
def live(stack, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"models": {
        MODEL: {"path": MODEL_PATHS["SMOLLM2_135M_PATH"], "n_ctx": N_CTX},
        "gemma3-270m": {"path": MODEL_PATHS["GEMMA3_270M_PATH"], "chat_format": "gemma", "embeddings": False}}}))
    stack.env["LLAMALITH_CONFIG"] = str(config)  # gemma3-270m may not embed
    stack.start_web()
    stack.start_worker()
    return stack


@pytest.fixture
def sdk(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=key_of(live.headers), max_retries=0, timeout=120)


def test_openai_embeddings_are_unit_vectors_that_place_similar_texts_closer_and_each_call_is_a_job(sdk, live):
    raw = sdk.embeddings.with_raw_response.create(model=MODEL, input=[*SIMILAR, UNRELATED],
                                                     encoding_format="float")
    answer = raw.parse()
    vectors = [item.embedding for item in answer.data]
    assert [item.index for item in answer.data] == [0, 1, 2] and answer.model == MODEL
    assert all(len(vector) == DIMENSIONS and abs(math.hypot(*vector) - 1) < 1e-4 for vector in vectors)
    similar, unrelated = cosine(vectors[0], vectors[1]), cosine(vectors[0], vectors[2])
    print(f"cosine: similar {similar:.3f}, unrelated {unrelated:.3f}")
    assert similar > unrelated
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > 10

    packed = sdk.embeddings.create(model=MODEL, input=SIMILAR[0], encoding_format="base64").data[0].embedding
    assert list(struct.unpack(f"<{DIMENSIONS}f", base64.b64decode(packed))) == pytest.approx(vectors[0], abs=1e-5)
    default = sdk.embeddings.create(model=MODEL, input=SIMILAR[0], dimensions=DIMENSIONS)  # the SDK asks base64
    assert default.data[0].embedding == pytest.approx(vectors[0], abs=1e-5)

    jobs = live.get("/api/jobs")["jobs"]  # newest first
    assert [(job["kind"], job["status"]) for job in jobs] == [("embedding", "done")] * 3
    first = jobs[-1]
    assert first["id"] == int(raw.headers["X-Llamalith-Job-Id"]) and first["usage"]["prompt_tokens"] == \
        answer.usage.prompt_tokens and first["conversation_id"].startswith("openai-")
    assert first["priority"] == "interactive" and first["system_prompt"] is None
    assert live.get("/api/jobs", headers=live.user("mallory"))["jobs"] == []
    page = requests.get(f"{live.url}/api/jobs/{first['id']}", headers=live.headers, timeout=10)
    assert page.ok and page.json()["result"].startswith("[[")


def test_openai_refusals_name_the_field(sdk, live):
    for extra, param in [({"input": [[1, 2, 3]]}, "input"), ({"input": []}, "input"), ({"input": [""]}, "input"),
                         ({"input": "hi", "encoding_format": "int8"}, "encoding_format"),
                         ({"input": "hi", "dimensions": 64}, "dimensions"),
                         ({"input": "llamas " * 400}, "input")]:
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.embeddings.create(model=MODEL, **extra)
        assert refused.value.body["param"] == param, refused.value.body
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.embeddings.create(model="gemma3-270m", input="hi")
    assert refused.value.body["param"] == "model" and "'gemma3-270m'" in refused.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        sdk.embeddings.create(model="text-embedding-3-small", input="hi")
    assert live.get("/api/jobs")["jobs"] == []  # no refusal made a job


def test_ollama_embed_and_embeddings_are_the_same_vectors_and_jobs(sdk, live):
    ours = ollama.Client(host=live.url + "/ollama", headers={"Authorization": f"Bearer {key_of(live.headers)}"},
                         timeout=120)
    reference = sdk.embeddings.create(model=MODEL, input=SIMILAR[0], encoding_format="float").data[0].embedding
    embedded = ours.embed(MODEL, [SIMILAR[0], UNRELATED])
    assert len(embedded.embeddings) == 2 and embedded.embeddings[0] == pytest.approx(reference, abs=1e-5)
    assert embedded.prompt_eval_count > 5 and embedded.total_duration >= embedded.load_duration >= 0
    assert ours.embeddings(MODEL, SIMILAR[0]).embedding == pytest.approx(reference, abs=1e-5)
    assert ours.embed(MODEL, "").embeddings == []  # no input: Ollama only loads the model; no job
    assert "embedding" in ours.show(MODEL).capabilities and "embedding" not in ours.show("gemma3-270m").capabilities

    long = ours.embed(MODEL, "llamas " * 400)  # cut to the context, Ollama's default
    assert len(long.embeddings[0]) == DIMENSIONS and long.prompt_eval_count == N_CTX
    for call, field in [(lambda: ours.embed(MODEL, "llamas " * 400, truncate=False), "input.0"),
                        (lambda: ours.embed("gemma3-270m", "hi"), "'gemma3-270m'"),
                        (lambda: ours.embed(MODEL, "hi", options={"typical_p": 0.5}), "'options.typical_p'"),
                        (lambda: ours.embed(MODEL, "hi", dimensions=8), "'dimensions'")]:
        with pytest.raises(ollama.ResponseError) as refused:
            call()
        assert refused.value.status_code == 400 and field in refused.value.error, refused.value.error
    with pytest.raises(ollama.ResponseError) as unknown:
        ours.embed("llama3", "hi")
    assert (unknown.value.status_code, unknown.value.error) == (404, "model 'llama3' not found")

    jobs = live.get("/api/jobs")["jobs"]
    assert [(job["kind"], job["status"]) for job in jobs] == [("embedding", "done")] * 4
    assert all(job["conversation_id"].startswith("ollama-") for job in jobs[:3])
    assert jobs[0]["usage"]["prompt_tokens"] == N_CTX
    assert live.get("/api/jobs", headers=live.user("mallory"))["jobs"] == []


def test_an_embedding_job_reads_on_the_pages_and_is_not_regenerated(signed_in):
    from app import embeddings
    from app.models import JobKind, JobStatus
    from tests.factories import add_turn

    vectors = [[0.6, 0.8], [1.0, 0.0]]
    job = add_turn("openai-e", embeddings.stored_inputs(["a", "b"]), JobStatus.DONE, embeddings.summary(vectors),
                   kind=JobKind.EMBEDDING.value, result=embeddings.stored_vectors(vectors), prompt_tokens=4)
    for page in ("/chat/jobs", f"/chat/jobs/{job.id}", f"/chat/conversations/{job.conversation_id}"):
        answer = signed_in.get(page)
        assert answer.status_code == 200, page
    assert "2 embeddings of 2 dimensions" in signed_in.get(f"/chat/conversations/{job.conversation_id}").text
    refused = signed_in.post(f"/chat/jobs/{job.id}/regenerate",
                             headers={"X-CSRFToken": signed_in.csrf_token("/chat/conversations")})
    assert refused.status_code == 409


def test_an_embedding_filed_in_a_chats_conversation_is_not_part_of_its_next_prompt(sdk, live):
    """The same name for a conversation on /v1/embeddings (`user`) and /api/submit (`session_id`): the chat's next
    prompt is as long as the same message's in a conversation of its own."""
    sdk.embeddings.create(model=MODEL, input=SIMILAR, user="shared")
    prompts = {}
    for session_id in ("shared", "alone"):
        job = live.submit(user_input="Name a colour.", session_id=session_id, max_tokens=4)
        prompts[session_id] = live.wait_job(job["job_id"])["usage"]["prompt_tokens"]
    assert prompts["shared"] == prompts["alone"]
