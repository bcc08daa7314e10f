"""The daily model budget (jobs/model_budget.py): the tokens each client's jobs spend, counted from
the model's answers; a client over it refused at submission (429) and its admitted jobs failed
before their next model call, while other clients' checklists go on.

The real worker runs the checklist job against the fake model server (tests/conftest.py); its
budget is the default MODEL_TOKENS_PER_CLIENT_PER_DAY, the value this process reads too before a
test changes it here (which changes the API's, in this process, not the worker's).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client as DjangoClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.errors import TooManyRequests
from core.services import api_key_create, client_create
from examples.receiver import Receiver
from jobs import model_budget, sql
from jobs.models import ModelUsage
from jobs.types import checklist_client
from jobs.types.base import JobFailed
from tests.conftest import Api
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.jobs.test_checklist import JOB, checklist_reply, submit, summary_for, wait_for_webhooks

HELLO = "api.tasks.hello_world"
# The worker's budget: it reads the same environment as this process.
WORKER_BUDGET = django_settings.MODEL_TOKENS_PER_CLIENT_PER_DAY


def tokens_today(api: Api) -> int:
    return model_budget.model_tokens_spent(owner_id=api.client.pk, day=model_budget.budget_day(timezone.now()))


def seconds_to_midnight_utc() -> float:
    now = datetime.now(UTC)
    return (datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC) - now).total_seconds()


def checklist_submission(api: Api, headers: dict[str, str] | None = None) -> Any:
    return api.post("/api/jobs/", json={"job_name": JOB, "payload": {"guidelines": "Wash hands."}}, headers=headers)


def test_each_clients_tokens_are_counted_from_the_answers_and_a_spent_budget_refuses_only_its_checklists(
    make_api: Callable[..., Api], api: Api, fake_openai: FakeOpenAI, settings: Any
) -> None:
    # Given two clients whose checklist jobs the model answers reporting different token counts
    other = make_api()
    spent = {}
    for client, tokens in ((api, (123, 456)), (other, (7, 8))):
        scenario = fake_openai.scenario()
        scenario.add(Reply.answer({"summary": summary_for(scenario)}, total_tokens=tokens[0]),
                     Reply.answer({"checklist": [{"task": "Wash hands"}]}, total_tokens=tokens[1]))
        spent[client.client.pk] = submit(client, scenario)["id"]
    for client in (api, other):
        assert client.wait(spent[client.client.pk])["status"] == "SUCCESS"

    # Then each client's usage of the day is the sum its own answers reported
    assert (tokens_today(api), tokens_today(other)) == (579, 15)
    keyed = checklist_submission(api, headers={"Idempotency-Key": "before-the-budget"})
    assert keyed.status_code == 202, keyed.text

    # When the budget is what the first client spent
    settings.MODEL_TOKENS_PER_CLIENT_PER_DAY = 579
    refused = checklist_submission(api)
    refused_batch = api.post("/api/jobs/batch/", json={"jobs": [{"job_name": HELLO}, {
        "job_name": JOB, "payload": {"guidelines": "Wash hands."}}]})

    # Then its checklist submissions, single or in a batch, are refused until midnight UTC...
    for response in (refused, refused_batch):
        assert response.status_code == 429, response.text
        error = response.json()["error"]
        assert error["code"] == "model_budget_exhausted"
        assert "579 model tokens today" in error["message"] and "daily budget of 579" in error["message"]
        assert error["details"]["tokens_spent"] == error["details"]["tokens_per_day"] == 579
        assert abs(int(response.headers["Retry-After"]) - seconds_to_midnight_utc()) <= 5
        assert datetime.fromisoformat(error["details"]["renews_at"]).time() == datetime.min.time()
    # ...but for the replay of a submission accepted before (it makes no new job)...
    replayed = checklist_submission(api, headers={"Idempotency-Key": "before-the-budget"})
    assert replayed.status_code < 300 and replayed.json()["id"] == keyed.json()["id"], replayed.text
    # ...while its other jobs, and the other client's checklists, are accepted
    assert api.post("/api/jobs/", json={"job_name": HELLO}).status_code == 202
    assert api.post("/api/jobs/batch/", json={"jobs": [{"job_name": HELLO}]}).status_code == 202
    assert checklist_submission(other).status_code == 202

    # And with no budget (0), nobody is refused
    settings.MODEL_TOKENS_PER_CLIENT_PER_DAY = 0
    assert checklist_submission(api).status_code == 202


def test_a_job_admitted_before_the_budget_ran_out_fails_without_calling_the_model(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    # Given a client's job scheduled a few seconds ahead, accepted while its budget is untouched,
    # with a retry policy and a callback for its failure
    secret = api.get("/api/webhook-secret/").json()["secret"]
    later = fake_openai.scenario()
    with Receiver(secret=secret) as receiver:
        admitted = submit(api, later, run_at=(timezone.now() + timedelta(seconds=4)).isoformat(),
                          retry={"max_attempts": 3, "backoff_seconds": 1}, callback_url=receiver.url,
                          webhook_events=["job.failed"])

        # When another of its jobs spends the whole day's budget in its first model call
        greedy = fake_openai.scenario()
        greedy.add(Reply.answer({"summary": summary_for(greedy)}, total_tokens=WORKER_BUDGET), checklist_reply())
        spender = api.wait(submit(api, greedy)["id"])
        assert api.get(f"/api/jobs/{admitted['id']}/").json()["status"] == "PENDING"
        failed = api.wait(admitted["id"], timeout=30)
        [event] = [r.event for r in wait_for_webhooks(receiver, lambda types: "job.failed" in types)]

    # Then the greedy job fails before its second call, and the admitted one before its first,
    # at once (its retry policy does not run it again): the model saw neither call
    for job in (spender, failed):
        assert (job["status"], job["attempt"], job["error"]["type"]) == ("FAILURE", 1, "model_budget_exhausted"), job
        assert f"daily budget of {WORKER_BUDGET}" in job["error"]["message"]
    assert len(greedy.requests) == 1
    assert later.requests == []
    assert tokens_today(api) == WORKER_BUDGET
    # And the failure reaches its webhook like any other
    assert event["data"]["id"] == admitted["id"]
    assert event["data"]["error"]["type"] == "model_budget_exhausted"


def test_answers_without_usage_are_not_counted(api: Api, fake_openai: FakeOpenAI) -> None:
    # Given a server that leaves usage out of its answers (some OpenAI-compatible ones do)
    scenario = fake_openai.scenario()
    answers = [Reply.answer({"summary": summary_for(scenario)}), checklist_reply()]
    for answer in answers:
        del answer.body["usage"]
    scenario.add(*answers)

    # Then its jobs run as before, and spend nothing of the budget
    assert api.wait(submit(api, scenario)["id"])["status"] == "SUCCESS"
    assert tokens_today(api) == 0


def test_a_checklist_submit_reads_the_budget_once_and_other_types_not_at_all(
    transactional_db: Any, celery_worker: str, fake_openai: FakeOpenAI
) -> None:
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=client_create(name='budget-reads'))}")
    later = (timezone.now() + timedelta(hours=1)).isoformat()  # scheduled: nothing runs
    submissions = {
        HELLO: {"job_name": HELLO, "run_at": later},
        JOB: {"job_name": JOB, "payload": {"guidelines": "Wash hands."}, "run_at": later},
    }
    http.post("/api/jobs/", submissions[HELLO], content_type="application/json")  # connection set-up

    reads = {}
    for name, body in submissions.items():
        with CaptureQueriesContext(connection) as queries:
            assert http.post("/api/jobs/", body, content_type="application/json").status_code == 202
        reads[name] = [q["sql"] for q in queries if ModelUsage._meta.db_table in q["sql"]]

    assert reads[HELLO] == []
    [read] = reads[JOB]
    assert read.startswith("SELECT") and '"owner_id" = ' in read and '"day" = ' in read


@pytest.mark.django_db
def test_retry_after_counts_to_the_next_midnight_utc() -> None:
    owner = client_create(name="budget-midnight")
    now = datetime(2026, 3, 1, 23, 59, 30, 400_000, tzinfo=UTC)
    sql.model_usage_add(owner.pk, day=now.date(), tokens=django_settings.MODEL_TOKENS_PER_CLIENT_PER_DAY)

    with pytest.raises(TooManyRequests) as refused:
        model_budget.model_budget_require_for_submit(owner=owner, now=now)
    # The next day's budget is untouched.
    model_budget.model_budget_require_for_submit(owner=owner, now=now + timedelta(seconds=30))

    assert refused.value.headers == {"Retry-After": "30"}
    assert refused.value.details["renews_at"] == "2026-03-02T00:00:00+00:00"


@pytest.mark.django_db
def test_a_running_job_is_stopped_once_over_budget_unless_there_is_none(settings: Any) -> None:
    owner = client_create(name="budget-run")
    settings.MODEL_TOKENS_PER_CLIENT_PER_DAY = 100
    model_budget.model_usage_record(owner_id=owner.pk, tokens=99)
    model_budget.model_budget_require_for_call(owner_id=owner.pk)  # 1 token left: the call is made
    model_budget.model_usage_record(owner_id=owner.pk, tokens=50)  # and may overshoot

    with pytest.raises(JobFailed) as failed:
        model_budget.model_budget_require_for_call(owner_id=owner.pk)
    assert (failed.value.error_type, failed.value.retryable) == ("model_budget_exhausted", False)

    settings.MODEL_TOKENS_PER_CLIENT_PER_DAY = 0
    model_budget.model_budget_require_for_call(owner_id=owner.pk)


def test_workers_adding_at_once_lose_no_tokens(transactional_db: Any) -> None:
    # Given a new day for a client (no row yet), and eight workers' calls answering at once
    owner = client_create(name="budget-race")
    day = datetime.now(UTC).date()
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait(10)
            for _ in range(25):
                sql.model_usage_add(owner.pk, day=day, tokens=3)
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # Then one row holds every call's tokens
    assert errors == []
    assert list(ModelUsage.objects.filter(owner=owner).values_list("day", "tokens")) == [(day, 8 * 25 * 3)]


def test_an_answer_claiming_more_tokens_than_the_day_can_count_spends_the_budget_once(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    # Given a server whose answer claims 2**63 tokens spent, more than the day's count (a
    # bigint) holds, then would answer well
    scenario = fake_openai.scenario()
    summary = {"summary": summary_for(scenario)}
    scenario.add(Reply.answer(summary, total_tokens=2**63), Reply.answer(summary), checklist_reply())

    job = api.wait(submit(api, scenario)["id"])

    # Then the call is counted once, as the most one call can spend, which is over the budget:
    # the job fails before its next call. It is not run again, calling the model each time, as
    # if the database had failed
    assert len(scenario.requests) == 1
    assert tokens_today(api) == checklist_client.MAX_TOKENS_PER_CALL
    assert (job["status"], job["error"]["type"]) == ("FAILURE", "model_budget_exhausted")
