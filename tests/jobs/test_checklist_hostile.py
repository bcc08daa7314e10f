"""The checklist job against a hostile model provider, through the real worker and the fake model
server (tests/fakes/openai_server.py): answers no result or error can hold as they are, an error
quoting the key it was sent or a megabyte long, answers drip-fed, huge or compressed."""
from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from jobs.types import checklist
from jobs.types.base import JobFailed
from jobs.types.checklist import ChecklistAnswer, SummaryAnswer
from jobs.types.checklist_client import MAX_ANSWER_BYTES
from tests.conftest import Api
from tests.fakes.openai_server import FAKE_API_KEY, FakeOpenAI, RecordedRequest, Reply
from tests.jobs.test_checklist import (
    checklist_reply,
    submit,
    summary_for,
    summary_reply,
)
from tests.jobs.test_model_budget import tokens_today


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

    # Then the job's error (which its client reads, and its webhook carries) quotes neither
    # (the provider's words on our key are the operator's: tests/jobs/test_checklist.py)
    assert len(scenario.requests) == 2
    assert (job["status"], job["error"]["type"]) == ("FAILURE", "model_auth_error")
    assert "Incorrect API key provided" not in job["error"]["message"]
    assert FAKE_API_KEY not in job["error"]["message"]
    # And the worker's log lines, of the retried try and of the refusal, say where the key was,
    # not what it is
    log = celery_worker_log.read_text().split("\n")
    [retried] = [line for line in log if scenario.token in line]
    assert f"Job {job['id']}: model call try 1 failed" in retried
    assert "upstream refused [OPENAI_API_KEY]" in retried
    [refused] = [line for line in log if job["id"] in line and "refused our credentials" in line]
    assert "Incorrect API key provided: [OPENAI_API_KEY]." in refused
    assert FAKE_API_KEY not in retried + refused


def prompt_tokens(request: RecordedRequest) -> int:
    """What the service counts a cut-off try's prompt as: its messages' characters, 4 a token."""
    return math.ceil(sum(len(message["content"]) for message in request.body["messages"]) / 4)


def test_an_answer_drip_fed_past_the_timeout_is_cut_off_and_tried_again(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    # Given a model server that drip-feeds its first answer, a byte every 0.2 s (each read well
    # inside the worker's 10 s OPENAI_TIMEOUT_SECONDS, the whole over a minute), then answers
    scenario = fake_openai.scenario()
    dripped = replace(summary_reply(scenario), drip_seconds=0.2)
    scenario.add(dripped, summary_reply(scenario), checklist_reply())
    started = time.monotonic()

    job = api.wait(submit(api, scenario)["id"], timeout=40)

    # Then the try is cut off once the timeout has passed, as a timeout, and the next one made:
    # the job succeeds (before, the one try ran to the step's 66 s soft time limit, and the job
    # failed `time_limit_exceeded`)
    assert (job["status"], len(scenario.requests)) == ("SUCCESS", 3), job
    assert scenario.requests[1].received_at - scenario.requests[0].received_at == pytest.approx(10, abs=2)
    assert time.monotonic() - started < 20
    # And the cut-off try is counted besides the two answered (20 tokens each): its prompt, and
    # the bytes of its answer read, at 4 a token (some 50 bytes in 10 s)
    cut_off = tokens_today(api) - 40 - prompt_tokens(scenario.requests[0])
    assert 1 <= cut_off <= len(json.dumps(dripped.body)) // 4 + 1


@pytest.mark.parametrize("unsized", [False, True])
def test_an_answer_larger_than_any_checklist_fails_the_job_unread(
    api: Api, fake_openai: FakeOpenAI, unsized: bool
) -> None:
    # Given a model server whose answer is 64 MiB (its JSON after that many spaces), its length
    # said in its headers or not
    scenario = fake_openai.scenario()
    huge = replace(summary_reply(scenario), padding_bytes=64 * 1024 * 1024, unsized=unsized)
    scenario.add(huge, checklist_reply())

    job = api.wait(submit(api, scenario)["id"])

    # Then the job fails as the model's bad answer, without reading it all, nor trying again
    assert (job["status"], len(scenario.requests)) == ("FAILURE", 1), job
    assert job["error"]["type"] == "invalid_model_output"
    assert f"longer than {MAX_ANSWER_BYTES}" in job["error"]["message"]
    assert scenario.requests[0].headers["accept-encoding"] == "identity"
    # And the provider may bill what it sent, whose usage was never read: its estimate is
    # counted, the prompt's characters at 4 a token, the answer's as much as one may have
    assert tokens_today(api) == prompt_tokens(scenario.requests[0]) + django_settings.OPENAI_MAX_OUTPUT_TOKENS


def test_a_compressed_answer_though_none_was_asked_for_fails_the_job(api: Api, fake_openai: FakeOpenAI) -> None:
    # Given a model server that says its answer is gzip (a few KiB of it may be gigabytes)
    scenario = fake_openai.scenario()
    scenario.add(replace(summary_reply(scenario), content_encoding="gzip"), checklist_reply())

    job = api.wait(submit(api, scenario)["id"])

    assert (job["status"], len(scenario.requests)) == ("FAILURE", 1), job
    assert job["error"]["type"] == "invalid_model_output"
    assert "compressed (gzip)" in job["error"]["message"]
    # Its length as told (the fake's, of the JSON as it is) is counted as an answer that long
    told = len(json.dumps(summary_reply(scenario).body))
    assert tokens_today(api) == prompt_tokens(scenario.requests[0]) + math.ceil(told / 4)


def test_a_retried_error_with_a_huge_body_is_logged_as_a_short_line(
    api: Api, fake_openai: FakeOpenAI, celery_worker_log: Path
) -> None:
    # Given a model server whose 500 carries a 1 MB message (the client quotes the whole body
    # in its error), then answers
    scenario = fake_openai.scenario()
    huge = Reply.error(500, f"({scenario.token}) " + "x" * 1_000_000)
    scenario.add(huge, summary_reply(scenario), checklist_reply())

    job = api.wait(submit(api, scenario)["id"])

    # Then the retried try's log line quotes the start of it, not a megabyte
    assert job["status"] == "SUCCESS", job
    [line] = [line for line in celery_worker_log.read_text().split("\n") if scenario.token in line]
    assert f"Job {job['id']}: model call try 1 failed" in line
    assert len(line) < 2_000


def test_only_what_an_answer_keeps_is_looked_at_for_characters_no_result_can_hold() -> None:
    kept = checklist.parse_answer('{"summary": "Sign the record.", "note\\u0000": "\\u0000"}', SummaryAnswer)
    assert kept.summary == "Sign the record."

    with pytest.raises(JobFailed, match="U\\+0000"):
        checklist.parse_answer('{"checklist": [{"task": "Sign\\u0000"}]}', ChecklistAnswer)


def _with(path: tuple[str | int, ...], value: Any) -> Callable[[Reply], Reply]:
    def change(reply: Reply) -> Reply:
        body = copy.deepcopy(reply.body)
        node: Any = body
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        return replace(reply, body=body)

    return change


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (_with(("choices", 0, "message", "content"), 123), "choices.0.message.content"),
        (_with(("choices", 0, "message", "content"), {"summary": "x"}), "choices.0.message.content"),
        (_with(("choices", 0, "message"), None), "choices.0.message"),
        (_with(("choices",), {"0": {}}), "choices"),
        (_with(("choices",), ["x"]), "choices.0"),
    ],
)
def test_an_answer_that_is_not_a_chat_completion_fails_as_the_models_bad_answer(
    api: Api, fake_openai: FakeOpenAI, change: Callable[[Reply], Reply], needle: str
) -> None:
    # Given a model server whose 200 is JSON, but not shaped as a chat completion
    scenario = fake_openai.scenario()
    scenario.add(change(summary_reply(scenario)), checklist_reply())

    job = api.wait(submit(api, scenario)["id"])

    # Then the job fails saying so (not with Python's TypeError or AttributeError), after one
    # call, its tokens counted
    assert (job["status"], len(scenario.requests)) == ("FAILURE", 1), job
    assert job["error"]["type"] == "invalid_model_output"
    assert job["error"]["message"].startswith("The model server's answer is not a chat completion: ")
    assert needle in job["error"]["message"]
    assert tokens_today(api) == 20


def test_an_answer_stopped_by_the_content_filter_says_so(api: Api, fake_openai: FakeOpenAI) -> None:
    # Given a model whose answer the provider's content filter cut short
    scenario = fake_openai.scenario()
    scenario.add(Reply.answer('{"summary": "Sign the', finish_reason="content_filter"), checklist_reply())

    job = api.wait(submit(api, scenario)["id"])

    assert (job["status"], len(scenario.requests)) == ("FAILURE", 1), job
    assert job["error"] == {
        "type": "invalid_model_output",
        "message": "The model's answer was withheld by the provider's content filter.",
    }


def test_each_model_call_asks_for_at_most_the_output_tokens_setting(api: Api, fake_openai: FakeOpenAI) -> None:
    # Given a model that answers both calls well
    scenario = fake_openai.scenario()
    scenario.add(summary_reply(scenario), checklist_reply())

    job = api.wait(submit(api, scenario)["id"])

    # Then each call bounded its answer by OPENAI_MAX_OUTPUT_TOKENS (the worker's is this
    # process's: the same environment), in the parameter the client names for chat completions
    assert job["status"] == "SUCCESS", job
    assert [request.body.get("max_completion_tokens") for request in scenario.requests] == [
        django_settings.OPENAI_MAX_OUTPUT_TOKENS
    ] * 2
    assert django_settings.OPENAI_MAX_OUTPUT_TOKENS == 16_384


def test_an_answer_cut_off_at_the_output_limit_fails_the_job_once_its_tokens_counted(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    # Given a model whose summary the provider cut off at the answer's token limit, and a job
    # whose retry policy would run it again
    scenario = fake_openai.scenario()
    cut_off = Reply.answer('{"summary": "Sign the', finish_reason="length", total_tokens=16_500)
    scenario.add(cut_off, summary_reply(scenario), checklist_reply())

    job = api.wait(submit(api, scenario, retry={"max_attempts": 3, "backoff_seconds": 1})["id"])

    # Then the job fails saying its answer was too long, after that one call (the same document
    # would be answered as long again, each run paying for it), its tokens counted; no truncated
    # summary or checklist is stored as a result
    assert (job["status"], len(scenario.requests)) == ("FAILURE", 1), job
    assert job["error"]["type"] == "model_output_too_long"
    assert "cut off at the 16384 tokens an answer may have" in job["error"]["message"]
    assert job["result"] is None
    assert tokens_today(api) == 16_500
