"""Prompt templates: versions that never change, {{variables}} filled in, and jobs that record the version used;
over the API, in the chat form and on the templates pages."""

import tracemalloc

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.keys import create_key
from app.models import PLACEHOLDER, Job, PromptTemplate
from app.prompt_templates import MAX_PLACEHOLDERS, fill, filled_length
from app.submissions import Refused
from tests.factories import MODEL, add_user

GREETER = "You greet {{ name }} in {{language}}. Never mention {{name}}'s age."


def save(client, headers, name: str, text: str, status: int = 201) -> dict:
    answer = client.post("/chat/api/prompt-templates", json={"name": name, "text": text}, headers=headers)
    assert answer.status_code == status, answer.text
    return answer.json


def submit(client, headers, status: int = 202, **body) -> dict:
    answer = client.post("/chat/api/submit", json={"user_input": "Hello", **body}, headers=headers)
    assert answer.status_code == status, answer.text
    return answer.json


def job_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Job))


# Over the API ---------------------------------------------------------------------------------------


def test_an_edit_is_version_2_while_version_1_still_reads_as_it_was(client, api_headers):
    first = save(client, api_headers, "greeter", "Greet {{name}}.")
    assert (first["version"], first["reference"], first["variables"]) == (1, "greeter@1", ["name"])
    assert save(client, api_headers, "greeter", "Greet {{name}}.", status=200)["version"] == 1  # unchanged: no v2
    second = save(client, api_headers, "greeter", GREETER)
    assert (second["version"], second["variables"]) == (2, ["name", "language"])

    latest = client.get("/chat/api/prompt-templates/greeter", headers=api_headers).json
    assert (latest["version"], latest["text"]) == (2, GREETER)
    assert [each["version"] for each in latest["versions"]] == [2, 1]
    assert client.get("/chat/api/prompt-templates/greeter@1", headers=api_headers).json["text"] == "Greet {{name}}."
    listed = client.get("/chat/api/prompt-templates", headers=api_headers).json["prompt_templates"]
    assert [(each["name"], each["version"]) for each in listed] == [("greeter", 2)]
    assert db.session.scalar(select(PromptTemplate.text).where(PromptTemplate.version == 1)) == "Greet {{name}}."


@pytest.mark.parametrize("body, message", [
    ({"name": "no spaces", "text": "x"}, "name"),
    ({"name": "ok", "text": "   "}, "text: must not be blank"),
    ({"name": "ok", "text": "x", "extra": 1}, "extra: unknown field"),
    ({"name": "ok"}, "text"),
    ({"name": "a" * 81, "text": "x"}, "name"),
])
def test_a_bad_template_is_a_400_and_saves_nothing(client, api_headers, body, message):
    answer = client.post("/chat/api/prompt-templates", json=body, headers=api_headers)
    assert answer.status_code == 400 and answer.json["error"]["code"] == "invalid_request"
    assert message in answer.json["error"]["message"]
    assert db.session.scalar(select(func.count()).select_from(PromptTemplate)) == 0


@pytest.mark.parametrize("reference, status", [("missing", 404), ("greeter@3", 404), ("greeter@0", 400),
                                               ("greeter@x", 400), ("a@b@c", 400)])
def test_an_unknown_or_malformed_reference(client, api_headers, reference, status):
    save(client, api_headers, "greeter", GREETER)
    assert client.get(f"/chat/api/prompt-templates/{reference}", headers=api_headers).status_code == status


def test_another_users_template_is_unknown(client, api_headers):
    save(client, api_headers, "greeter", GREETER)
    stranger = {"Authorization": f"Bearer {create_key('stranger', add_user('bob').id)}"}
    assert client.get("/chat/api/prompt-templates/greeter", headers=stranger).status_code == 404
    assert client.get("/chat/api/prompt-templates", headers=stranger).json == {"prompt_templates": []}
    refused = submit(client, stranger, 400, prompt_template="greeter", variables={"name": "A", "language": "B"})
    assert refused["error"]["code"] == "unknown_prompt_template"


def test_a_job_fills_the_version_it_names_and_records_it(client, api_headers):
    save(client, api_headers, "greeter", "Greet {{name}}.")
    save(client, api_headers, "greeter", GREETER)
    old = submit(client, api_headers, prompt_template="greeter@1", variables={"name": "Ann", "unused": "x"})
    assert (old["system_prompt"], old["prompt_template"]) == ("Greet Ann.", "greeter@1")
    latest = submit(client, api_headers, prompt_template="greeter", variables={"name": "Ann", "language": "French"})
    assert latest["system_prompt"] == "You greet Ann in French. Never mention Ann's age."
    assert (latest["prompt_template"], latest["variables"]) == ("greeter@2", {"name": "Ann", "language": "French"})
    assert client.get(f"/chat/api/jobs/{latest['id']}", headers=api_headers).json["prompt_template"] == "greeter@2"


def test_a_value_is_filled_in_as_text_never_as_a_template(client, api_headers):
    save(client, api_headers, "greeter", GREETER)
    job = submit(client, api_headers, prompt_template="greeter",
                 variables={"name": "{{language}}", "language": "{{ name }} {% code %}"})
    assert job["system_prompt"] == "You greet {{language}} in {{ name }} {% code %}. Never mention {{language}}'s age."


@pytest.mark.parametrize("body, code, words", [
    ({"prompt_template": "greeter", "variables": {"name": "Ann"}}, "missing_variable", "'language'"),
    ({"prompt_template": "greeter"}, "missing_variable", "'name'"),
    ({"prompt_template": "nope"}, "unknown_prompt_template", "'nope'"),
    ({"prompt_template": "greeter", "system_prompt": "x", "variables": {"name": "A", "language": "B"}},
     "invalid_request", "not both"),
    ({"variables": {"name": "Ann"}}, "invalid_request", "prompt_template"),
    ({"prompt_template": "greeter", "variables": {"name": 1, "language": "B"}}, "invalid_request", "variables.name"),
    ({"prompt_template": "greeter", "variables": {"name": "\ud800", "language": "B"}}, "invalid_request", "name"),
    ({"prompt_template": "greeter", "variables": {"name": "x" * 100_001, "language": "B"}}, "invalid_request",
     "name"),
])
def test_a_missing_variable_or_a_bad_template_choice_is_a_400_naming_it(client, api_headers, body, code, words):
    save(client, api_headers, "greeter", GREETER)
    refused = submit(client, api_headers, 400, **body)
    assert refused["error"]["code"] == code and words in refused["error"]["message"]
    assert job_count() == 0


def test_the_real_model_gets_the_filled_template_as_its_system_prompt(client, api_headers, work, prompts_seen):
    save(client, api_headers, "pirate", "You are a pirate called {{name}}.")
    job = submit(client, api_headers, prompt_template="pirate", variables={"name": "Redbeard"})
    work()
    done = client.get(f"/chat/api/jobs/{job['id']}", headers=api_headers).json
    assert done["status"] == "done" and done["result"]
    assert "You are a pirate called Redbeard." in prompts_seen[-1]
    assert done["prompt_template"] == "pirate@1"


BOMB_VALUE = "x" * 50_000  # 50 KB: a 1000-placeholder template would fill to 50 MB, a 20,000-placeholder one to 1 GB


def peak_bytes(call) -> int:
    """The most memory Python held at once while `call` ran, above what it held before."""
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_the_filled_length_is_counted_from_the_placeholders_without_building_the_text():
    text = "Hi {{a}}, {{ b }}!" + "{{a}}" * 19_998
    assert filled_length(text, list(PLACEHOLDER.finditer(text)), {"a": BOMB_VALUE, "b": "Bo"}) == \
        len("Hi , !") + 19_999 * 50_000 + 2
    template = PromptTemplate(name="bomb", version=1, text="{{a}}" * MAX_PLACEHOLDERS)

    def refused():
        with pytest.raises(Refused, match="filled in is longer than 100000 characters"):
            fill(template, {"a": BOMB_VALUE})

    assert peak_bytes(refused) < 5_000_000  # the 50 MB text is never made


def test_a_template_with_too_many_placeholders_is_refused_when_saved(client, api_headers):
    refused = save(client, api_headers, "bomb", "{{a}}" * (MAX_PLACEHOLDERS + 1), status=400)
    assert refused["error"]["code"] == "invalid_request"
    assert f"at most {MAX_PLACEHOLDERS} are allowed" in refused["error"]["message"]
    assert save(client, api_headers, "many", "{{a}}" * MAX_PLACEHOLDERS)["variables"] == ["a"]
    assert db.session.scalar(select(func.count()).select_from(PromptTemplate)) == 1


@pytest.mark.parametrize("placeholders, words", [(MAX_PLACEHOLDERS, "filled in is longer than"),
                                                 (20_000, "has 20000 {{placeholders}}")])
def test_a_template_bomb_is_refused_at_once_without_building_it(client, api_headers, owner, placeholders, words):
    # The 20,000-placeholder one as saved before the cap existed: written directly.
    db.session.add(PromptTemplate(user_id=owner.id, name="bomb", version=1, text="{{a}}" * placeholders))
    db.session.commit()
    answers = []
    peak = peak_bytes(lambda: answers.append(submit(client, api_headers, 400, prompt_template="bomb",
                                                    variables={"a": BOMB_VALUE})))
    assert answers[0]["error"]["code"] == "invalid_request" and words in answers[0]["error"]["message"]
    assert peak < 20_000_000 and job_count() == 0


# In the browser's forms --------------------------------------------------------------------------------


def form_post(client, url: str, **data):
    return client.post(url, data={**data, "csrf_token": client.csrf_token("/chat/prompt-templates")})


def test_templates_are_made_edited_and_their_history_read_in_the_ui(signed_in):
    assert "No templates yet." in signed_in.get("/chat/prompt-templates").text
    made = form_post(signed_in, "/chat/prompt-templates", name="greeter", text="Greet {{name}}.\r\n")
    assert made.status_code == 303 and made.headers["Location"] == "/chat/prompt-templates/greeter"
    edited = form_post(signed_in, "/chat/prompt-templates", name="greeter", text=GREETER)
    page = signed_in.get(edited.headers["Location"]).text
    assert "Saved greeter@2." in page and "version 2" in page and "Save as version 3" in page
    assert "greeter@1" in page and 'href="/chat/prompt-templates/greeter?version=1"' in page
    old = signed_in.get("/chat/prompt-templates/greeter?version=1").text
    assert "<pre class=\"plain template-text\" tabindex=\"0\">Greet {{name}}.\n</pre>" in old and "version 1 of 2" in old
    listed = signed_in.get("/chat/prompt-templates").text
    assert "<code>name</code> <code>language</code>" in listed
    assert signed_in.get("/chat/prompt-templates/greeter?version=7").status_code == 404


def test_a_bad_template_form_is_explained_and_saves_nothing(signed_in):
    answer = form_post(signed_in, "/chat/prompt-templates", name="two words", text="")
    assert answer.status_code == 422
    assert "Letters, digits and . _ - only" in answer.text and "Write the system prompt." in answer.text
    answer = form_post(signed_in, "/chat/prompt-templates", name="bomb", text="{{a}}" * (MAX_PLACEHOLDERS + 1))
    assert answer.status_code == 400 and f"at most {MAX_PLACEHOLDERS} are allowed" in answer.text
    assert db.session.scalar(select(func.count()).select_from(PromptTemplate)) == 0


def test_the_chat_form_offers_templates_asks_for_their_variables_and_the_job_records_the_version(signed_in, user):
    form_post(signed_in, "/chat/prompt-templates", name="greeter", text=GREETER)
    page = signed_in.get("/chat/conversations/new").text
    assert '<optgroup label="greeter"><option value="greeter">greeter (v1)</option></optgroup>' in page
    fields = signed_in.htmx("GET", "/chat/prompt-template-fields?prompt_template=greeter&variable-name=Ann").text
    assert 'name="variable-name" value="Ann"' in fields and 'name="variable-language" value=""' in fields

    refused = signed_in.htmx("POST", "/chat/conversations/ui-t/messages", data={
        "prompt": "Hi", "model": MODEL, "prompt_template": "greeter", "variable-name": "Ann"})
    assert refused.status_code == 422 and "needs the variable &#39;language&#39;" in refused.text
    assert 'name="variable-name" value="Ann"' in refused.text  # what was typed stays
    assert job_count() == 0

    sent = signed_in.htmx("POST", "/chat/conversations/ui-t/messages", data={
        "prompt": "Hi", "model": MODEL, "prompt_template": "greeter", "variable-name": "Ann",
        "variable-language": "Welsh"})
    job = db.session.scalar(select(Job))
    assert (job.prompt_template.ref, job.prompt_variables) == ("greeter@1", {"name": "Ann", "language": "Welsh"})
    assert job.system_prompt == "You greet Ann in Welsh. Never mention Ann's age."
    assert '<option selected value="greeter">' in sent.text  # the next prompt continues with it
    assert 'name="variable-language" value="Welsh"' in sent.text
    detail = signed_in.get(f"/chat/jobs/{job.id}").text
    assert "greeter@1</a>" in detail and "<code>language</code> = “Welsh”" in detail


def test_the_chat_form_offers_earlier_versions_and_the_job_records_the_one_chosen(signed_in, user):
    form_post(signed_in, "/chat/prompt-templates", name="greeter", text="Greet {{name}}.")
    form_post(signed_in, "/chat/prompt-templates", name="greeter", text=GREETER)
    page = signed_in.get("/chat/conversations/new").text
    assert ('<optgroup label="greeter"><option value="greeter">greeter (v2)</option>'
            '<option value="greeter@1">greeter (v1)</option></optgroup>') in page
    fields = signed_in.htmx("GET", "/chat/prompt-template-fields?prompt_template=greeter@1").text
    assert "Greet {{name}}." in fields and 'name="variable-name"' in fields and "variable-language" not in fields
    assert 'href="/chat/prompt-templates/greeter?version=1">greeter@1</a>' in fields

    sent = signed_in.htmx("POST", "/chat/conversations/ui-t/messages", data={
        "prompt": "Hi", "model": MODEL, "prompt_template": "greeter@1", "variable-name": "Ann"})
    job = db.session.scalar(select(Job))
    assert (job.prompt_template.ref, job.system_prompt) == ("greeter@1", "Greet Ann.")
    assert '<option selected value="greeter@1">' in sent.text  # the next prompt keeps the earlier version
    form_post(signed_in, "/chat/prompt-templates", name="greeter", text="Hello {{name}}.")
    assert '<option selected value="greeter@1">' in signed_in.get("/chat/conversations/ui-t").text
