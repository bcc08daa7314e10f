"""What the model provider moves in /metrics: the checklist job's model calls, each try by outcome,
an answer's time and tokens, recorded by the real worker against the fake model server
(tests/conftest.py: 3 tries per call); and the refusals of a spent daily model budget, at
submission (the API) and before a running job's call (the worker). Read off the API's /metrics,
which serves the run's one multiprocess directory, the worker's files with its own."""
from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings as django_settings

from jobs import model_budget
from jobs.types.checklist_failures import CALL_OUTCOMES
from tests.conftest import Api
from tests.console.test_metrics import Samples, parse, scrape, value
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.jobs.test_checklist import (
    JOB,
    checklist_reply,
    submit,
    summary_for,
    summary_reply,
)

# The worker's model and budget: it reads the same environment as this process, before a test
# changes this process's settings.
MODEL = django_settings.OPENAI_MODEL
WORKER_BUDGET = django_settings.MODEL_TOKENS_PER_CLIENT_PER_DAY


def calls(before: Samples, after: Samples) -> dict[str, float]:
    """The tries counted in between, by outcome (the ones that moved)."""
    moved = {outcome: value(after, "jobapi_model_calls_total", model=MODEL, outcome=outcome)
             - value(before, "jobapi_model_calls_total", model=MODEL, outcome=outcome) for outcome in CALL_OUTCOMES}
    return {outcome: n for outcome, n in moved.items() if n}


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_a_checklist_job_counts_its_calls_their_time_and_tokens(api: Api, fake_openai: FakeOpenAI) -> None:
    # Given a model whose two answers report 300 and 45 tokens
    scenario = fake_openai.scenario()
    scenario.add(Reply.answer({"summary": summary_for(scenario)}, total_tokens=300),
                 Reply.answer({"checklist": [{"task": "Wash hands"}]}, total_tokens=45))
    before = scrape(api.base_url)

    # When a checklist job runs to its end
    assert api.wait(submit(api, scenario)["id"])["status"] == "SUCCESS"
    response = api.session.get(f"{api.base_url}/metrics", headers={"Authorization": "Bearer test-metrics-token"},
                               timeout=30)
    assert response.status_code == 200
    after = parse(response.text)

    # Then its two calls are counted as answered, with their time and the tokens they reported
    assert calls(before, after) == {"ok": 2}
    assert moved(before, after, "jobapi_model_call_duration_seconds_count", model=MODEL) == 2
    assert moved(before, after, "jobapi_model_call_duration_seconds_sum", model=MODEL) > 0
    assert moved(before, after, "jobapi_model_call_duration_seconds_bucket", model=MODEL, le="120.0") == 2
    assert moved(before, after, "jobapi_model_tokens_total", model=MODEL) == 345
    # And no series names the client or the job: the model and the outcome only
    labels = {name for (metric, series) in after if metric.startswith("jobapi_model_") for name, _ in series}
    assert labels == {"model", "outcome", "le", "where"}
    assert str(api.client.pk) not in response.text


def test_a_retried_try_and_the_call_it_saved_are_each_counted(api: Api, fake_openai: FakeOpenAI) -> None:
    # Given a model that rate-limits the first call once, and drops the second's connection once
    scenario = fake_openai.scenario()
    scenario.add(Reply.error(429, "Rate limit reached"), summary_reply(scenario),
                 Reply(drop=True), checklist_reply())
    before = scrape(api.base_url)

    # When the job runs, each call retried once
    assert api.wait(submit(api, scenario)["id"])["status"] == "SUCCESS"
    after = scrape(api.base_url)

    # Then each retried try is counted by its kind, and the answers that followed as ok
    assert len(scenario.requests) == 4
    assert calls(before, after) == {"rate_limited": 1, "connection_error": 1, "ok": 2}
    assert moved(before, after, "jobapi_model_call_duration_seconds_count", model=MODEL) == 2


@pytest.mark.parametrize(("replies", "counted"), [
    ([Reply.error(500, "The server had an error")] * 3, {"server_error": 2, "failed": 1}),
    ([Reply.error(401, "Incorrect API key provided")], {"failed": 1}),
    # The client's document, longer than the model reads: not the provider failing (the alert
    # leaves it out)
    ([Reply.error(400, "This model's maximum context length is 8192 tokens.", code="context_length_exceeded")],
     {"input_too_long": 1}),
])
def test_a_call_failed_for_good_is_counted_once_as_failed(
    api: Api, fake_openai: FakeOpenAI, replies: list[Reply], counted: dict[str, float]
) -> None:
    scenario = fake_openai.scenario(*replies)
    before = scrape(api.base_url)

    assert api.wait(submit(api, scenario)["id"])["status"] == "FAILURE"
    after = scrape(api.base_url)

    assert calls(before, after) == counted
    assert moved(before, after, "jobapi_model_call_duration_seconds_count", model=MODEL) == 0
    assert moved(before, after, "jobapi_model_tokens_total", model=MODEL) == 0


def test_a_spent_budget_counts_its_refusals_at_submission_and_before_a_call(
    api: Api, fake_openai: FakeOpenAI, settings: Any
) -> None:
    # Given a client that has spent the API's budget of 10 tokens today
    settings.MODEL_TOKENS_PER_CLIENT_PER_DAY = 10
    model_budget.model_usage_record(owner_id=api.client.pk, tokens=10)
    guidelines = {"job_name": JOB, "payload": {"guidelines": "Wash hands."}}
    before = scrape(api.base_url)

    # When it submits a checklist job, and a batch of two
    single = api.post("/api/jobs/", json=guidelines)
    batch = api.post("/api/jobs/batch/", json={"jobs": [guidelines, guidelines]})

    # Then both are refused, and counted once each where they were refused
    assert [single.status_code, batch.status_code] == [429, 429]
    assert single.json()["error"]["code"] == batch.json()["error"]["code"] == "model_budget_exhausted"
    after = scrape(api.base_url)
    assert moved(before, after, "jobapi_model_budget_refusals_total", where="submit") == 2
    assert moved(before, after, "jobapi_model_budget_refusals_total", where="run") == 0

    # When the API checks no budget but the worker does (its own, from the environment), and
    # the client has spent it
    settings.MODEL_TOKENS_PER_CLIENT_PER_DAY = 0
    model_budget.model_usage_record(owner_id=api.client.pk, tokens=WORKER_BUDGET)
    scenario = fake_openai.scenario()
    job = api.wait(submit(api, scenario)["id"])

    # Then the job fails before its first call, counted as refused at run, and no call is counted
    assert job["error"]["type"] == "model_budget_exhausted" and scenario.requests == []
    final = scrape(api.base_url)
    assert moved(after, final, "jobapi_model_budget_refusals_total", where="run") == 1
    assert moved(after, final, "jobapi_model_budget_refusals_total", where="submit") == 0
    assert calls(after, final) == {}
