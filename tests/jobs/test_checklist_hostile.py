"""The checklist job against a model provider that answers what no result or error can hold as
is, or quotes the key it was sent, through the real worker and the fake model server
(tests/fakes/openai_server.py)."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import Api
from tests.fakes.openai_server import FAKE_API_KEY, FakeOpenAI, Reply
from tests.jobs.test_checklist import checklist_reply, submit, summary_for


def test_an_answer_with_a_character_no_result_can_hold_fails_once_without_calling_again(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    # Given a model whose summary holds U+0000 (valid JSON, escaped), which PostgreSQL's jsonb
    # refuses (a lone surrogate, which it refuses too, the answer's schema does), then would
    # answer well
    scenario = fake_openai.scenario()
    summary = summary_for(scenario)
    answer = f'{{"summary": "{summary}\\u0000"}}'
    scenario.add(Reply.answer(answer), Reply.answer({"summary": summary}), checklist_reply())

    job = api.wait(submit(api, scenario)["id"])

    # Then the job fails at once as the model's bad answer, after one call: the step is not run
    # again, calling (and paying for) the model each time, as if the database had failed
    assert len(scenario.requests) == 1
    assert job["status"] == "FAILURE", job
    assert job["error"]["type"] == "invalid_model_output"
    assert "U+0000" in job["error"]["message"]


def test_a_provider_error_with_characters_no_error_can_hold_fails_the_job_with_them_replaced(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    # Given a model server whose 400 message holds U+0000 and a lone surrogate
    scenario = fake_openai.scenario()
    scenario.add(Reply.error(400, "bad\x00request\ud800here"), checklist_reply())

    job = api.wait(submit(api, scenario)["id"])

    # Then the job fails with the provider's message, those characters replaced, after one call
    assert len(scenario.requests) == 1
    assert job["status"] == "FAILURE", job
    assert job["error"]["type"] == "model_bad_request"
    assert "bad\ufffdrequest\ufffdhere" in job["error"]["message"]


def test_a_provider_that_echoes_the_api_key_does_not_put_it_in_the_job_or_the_log(
    api: Api, fake_openai: FakeOpenAI, celery_worker_log: Path
) -> None:
    # Given a model server (a gateway) whose errors quote the key it was sent: a 500, retried,
    # then a 401
    scenario = fake_openai.scenario()
    scenario.add(
        Reply.error(500, f"upstream refused {FAKE_API_KEY} ({scenario.token})"),
        Reply.error(401, f"Incorrect API key provided: {FAKE_API_KEY}.", code="invalid_api_key"),
    )

    job = api.wait(submit(api, scenario)["id"])

    # Then the job's error (which its client reads, and its webhook carries) and the worker's
    # log line of the retried try say where the key was, not what it is
    assert len(scenario.requests) == 2
    assert (job["status"], job["error"]["type"]) == ("FAILURE", "model_auth_error")
    assert "Incorrect API key provided: [OPENAI_API_KEY]." in job["error"]["message"]
    assert FAKE_API_KEY not in job["error"]["message"]
    [line] = [line for line in celery_worker_log.read_text().split("\n") if scenario.token in line]
    assert f"Job {job['id']}: model call try 1 failed" in line
    assert "upstream refused [OPENAI_API_KEY]" in line
    assert FAKE_API_KEY not in line
