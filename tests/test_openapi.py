"""The OpenAPI document cannot drift: every JSON route is in it (and nothing else), and Schemathesis sends
hundreds of generated requests, valid and invalid, to a live stack and checks every answer against it."""

import pytest
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance
from hypothesis import HealthCheck, given, settings

DOCUMENTED_FACES = ("/chat/api/", "/chat/v1/")


def test_every_json_route_is_documented_and_nothing_else(app, client):
    spec = client.get("/chat/api/openapi.json").json
    documented = {(path, method.upper()) for path, operations in spec["paths"].items() for method in operations}
    routed = {(rule.rule.removeprefix("/chat").replace("<int:", "{").replace("<", "{").replace(">", "}"), method)
              for rule in app.url_map.iter_rules() if rule.rule.startswith(DOCUMENTED_FACES)
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routed
    assert spec["openapi"] == "3.1.0" and spec["paths"]["/api/openapi.json"]["get"]["security"] == []


@pytest.fixture
def live(stack):
    # Generated jobs end quickly one way or another; Schemathesis also tries wrong keys on purpose, more than the
    # per-address limit on failed authentications allows.
    stack.env.update(JOB_TIMEOUT="2", LLM_MAX_TOKENS="8", API_AUTH_FAILURES="100000")
    stack.start_web()
    stack.start_worker()
    return stack


@pytest.mark.same_on_postgres
def test_every_answer_matches_the_document_and_none_is_a_5xx_by_mistake(live):
    """All operations but the event stream (it stays open while its job runs; tests/test_streaming.py and
    tests/test_limits.py cover it), 40 generated requests each, valid and invalid. Every check runs but one: a
    schema cannot say which models exist, which callback hosts are allowed, or whether a prompt fits the context,
    so some schema-valid requests are rightly a 400."""
    schema = schemathesis.openapi.from_url(live.url + "/api/openapi.json").exclude(path_regex="/events$")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {operation.label for operation in operations}
    assert {"POST /api/submit", "POST /v1/chat/completions", "GET /api/usage"} <= labels and len(labels) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers_as_documented(case):
            response = case.call(headers=live.headers, timeout=60)
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        answers_as_documented()
