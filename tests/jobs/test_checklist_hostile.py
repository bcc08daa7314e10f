"""The checklist job against a model provider that answers what no result or error can hold as
is, through the real worker and the fake model server (tests/fakes/openai_server.py)."""
from __future__ import annotations

from tests.conftest import Api
from tests.fakes.openai_server import FakeOpenAI, Reply
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
