"""A client's own limits (core/limits.py), set by the operator in the admin, replace the settings
every client shares for that client only: its submit and read rates (the real Redis limiter), its
cap on unfinished jobs and its daily model budget; 0 lifts a limit as the setting's 0 does."""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.models import Client
from core.services import client_create
from jobs import model_budget, sql
from jobs.types.base import JobFailed
from tests.conftest import Api
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.jobs.test_checklist import JOB, checklist_reply, submit, summary_for

HELLO = {"job_name": "api.tasks.hello_world"}


def limited(api: Api, **limits: int) -> Api:
    """`api`, its client given its own `limits` (before its key is first checked, so read with it)."""
    Client.objects.filter(pk=api.client.pk).update(**limits)
    return api


def later() -> dict[str, str]:
    """A submission that stays PENDING (scheduled an hour ahead): it counts as unfinished."""
    return {**HELLO, "run_at": (timezone.now() + timedelta(hours=1)).isoformat()}


def operator() -> HttpClient:
    http = HttpClient()
    http.force_login(User.objects.create_superuser("operator", "operator@example.com", "pw"))
    return http


def test_a_clients_own_submit_rate_limits_it_alone(make_api: Callable[..., Api]) -> None:
    # Given a client cut to 2 submissions a minute, and one with the default (6000)
    small, default = limited(make_api(), submit_rate_per_minute=2), make_api()

    # When each submits three jobs
    statuses = {api: [api.post("/api/jobs/", json=HELLO).status_code for _ in range(3)] for api in (small, default)}

    # Then only the first is refused its third, with the limiter's 429
    assert statuses == {small: [202, 202, 429], default: [202, 202, 202]}
    refused = small.post("/api/jobs/", json=HELLO)
    assert refused.json()["error"]["code"] == "rate_limited" and int(refused.headers["Retry-After"]) > 0
    assert small.get("/api/jobs/").status_code == 200  # its reads are another budget


def test_a_clients_own_read_rate_limits_its_reads(make_api: Callable[..., Api]) -> None:
    small, default = limited(make_api(), read_rate_per_minute=2), make_api()

    statuses = {api: [api.get("/api/jobs/").status_code for _ in range(3)] for api in (small, default)}

    assert statuses == {small: [200, 200, 429], default: [200, 200, 200]}


def test_a_clients_own_rates_are_the_policy_its_answers_tell(make_api: Callable[..., Api]) -> None:
    # Given a client with its own submit and read rates, and one with the defaults (6000)
    own, default = limited(make_api(), submit_rate_per_minute=3, read_rate_per_minute=7), make_api()

    # When each submits and reads
    answers = {api: [api.post("/api/jobs/", json=HELLO), api.get("/api/jobs/")] for api in (own, default)}

    # Then each answer's RateLimit-Policy is that client's own quota in the scope
    assert {api: [r.headers["RateLimit-Policy"] for r in rs] for api, rs in answers.items()} == {
        own: ['"submit";q=3;w=60', '"read";q=7;w=60'],
        default: ['"submit";q=6000;w=60', '"read";q=6000;w=60'],
    }
    left = {api: [r.headers["RateLimit"].split(";t=")[0] for r in rs] for api, rs in answers.items()}
    assert left == {own: ['"submit";r=2', '"read";r=6'], default: ['"submit";r=5999', '"read";r=5999']}


def test_a_clients_own_rate_of_0_lifts_the_settings_limit(make_api: Callable[..., Api], settings: Any) -> None:
    # Given a submit rate of 2 a minute for everyone but a client whose own is 0 (no limit)
    settings.API_SUBMIT_RATE_PER_MINUTE = 2
    unlimited, default = limited(make_api(), submit_rate_per_minute=0), make_api()

    statuses = {api: [api.post("/api/jobs/", json=HELLO).status_code for _ in range(3)] for api in (unlimited, default)}

    assert statuses == {unlimited: [202, 202, 202], default: [202, 202, 429]}


def test_a_clients_own_cap_on_unfinished_jobs(make_api: Callable[..., Api], settings: Any) -> None:
    # Given a client capped at 1 unfinished job, and one with the default cap (10,000)
    capped, default = limited(make_api(), max_unfinished_jobs=1), make_api()

    # When each submits two jobs that stay pending, and the capped one a batch of one more
    statuses = {api: [api.post("/api/jobs/", json=later()).status_code for _ in range(2)] for api in (capped, default)}
    batch = capped.post("/api/jobs/batch/", json={"jobs": [later()]})

    # Then the capped client's second is refused, saying its own cap; the other's is not
    assert statuses == {capped: [202, 429], default: [202, 202]}
    refused = capped.post("/api/jobs/", json=later())
    for response in (refused, batch):
        assert response.status_code == 429, response.text
        error = response.json()["error"]
        assert error["code"] == "too_many_unfinished_jobs" and error["details"] == {"max_unfinished_jobs": 1}
        assert error["message"].startswith("You may have 1 unfinished jobs")


@pytest.mark.parametrize("limit", ["submit_rate_per_minute", "max_unfinished_jobs"])
def test_a_batch_larger_than_the_clients_own_limit_is_told_so_rather_than_to_wait(
    make_api: Callable[..., Api], limit: str
) -> None:
    # Given a client whose own submission rate, or cap on unfinished jobs, is 5
    api = limited(make_api(), **{limit: 5})

    # When it sends a batch of 6 jobs (within the settings' 1,000), nothing spent yet
    response = api.post("/api/jobs/batch/", json={"jobs": [later()] * 6})

    # Then it is refused for its size, as one over 1,000 is: answered 429 with a Retry-After,
    # the client waited and sent it again, for ever, since it could never fit; a smaller one fits
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "batch_too_large" and error["details"] == {"max_jobs": 5}
    assert api.post("/api/jobs/batch/", json={"jobs": [later()] * 4}).status_code == 202


def test_a_clients_own_cap_of_0_lifts_the_settings_cap(make_api: Callable[..., Api], settings: Any) -> None:
    settings.JOB_MAX_UNFINISHED_PER_CLIENT = 1
    uncapped, default = limited(make_api(), max_unfinished_jobs=0), make_api()

    statuses = {api: [api.post("/api/jobs/", json=later()).status_code for _ in range(2)] for api in (uncapped, default)}

    assert statuses == {uncapped: [202, 202], default: [202, 429]}


@pytest.mark.parametrize(("budget", "setting", "refused"), [(10, 2_000_000, True), (0, 10, False), (None, 10, True)])
def test_a_clients_own_model_budget_at_submission(
    make_api: Callable[..., Api], fake_openai: FakeOpenAI, settings: Any, budget: int | None, setting: int,
    refused: bool,
) -> None:
    # Given a client that spent 10 model tokens today, with its own budget (or none: the setting's)
    settings.MODEL_TOKENS_PER_CLIENT_PER_DAY = setting
    api = limited(make_api(), model_tokens_per_day=budget)
    sql.model_usage_add(api.client.pk, day=model_budget.budget_day(timezone.now()), tokens=10)

    # When it submits a checklist (scheduled: nothing runs)
    response = api.post("/api/jobs/", json={"job_name": JOB, "payload": {"guidelines": "Wash hands."},
                                            "run_at": later()["run_at"]})

    # Then its own budget decides, and the refusal names it
    if not refused:
        assert response.status_code == 202, response.text
        return
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "model_budget_exhausted" and error["details"]["tokens_per_day"] == 10
    assert "daily budget of 10;" in error["message"]


def test_a_clients_own_model_budget_stops_its_running_job(api: Api, fake_openai: FakeOpenAI) -> None:
    # Given a client whose own budget is 500 tokens a day (the worker's setting: 2,000,000)
    limited(api, model_tokens_per_day=500)
    greedy = fake_openai.scenario()
    greedy.add(Reply.answer({"summary": summary_for(greedy)}, total_tokens=500), checklist_reply())

    # When its checklist job's first model call spends them
    job = api.wait(submit(api, greedy)["id"])

    # Then the worker fails the job before its second call, on the client's budget
    assert (job["status"], job["error"]["type"]) == ("FAILURE", "model_budget_exhausted"), job
    assert "daily budget of 500;" in job["error"]["message"]
    assert len(greedy.requests) == 1


@pytest.mark.django_db
def test_the_worker_reads_a_clients_budget_with_its_usage_in_one_query(settings: Any) -> None:
    own, default = client_create(name="own-budget"), client_create(name="default-budget")
    Client.objects.filter(pk=own.pk).update(model_tokens_per_day=0)
    settings.MODEL_TOKENS_PER_CLIENT_PER_DAY = 100
    for client in (own, default):
        model_budget.model_usage_record(owner_id=client.pk, tokens=100)

    with CaptureQueriesContext(connection) as queries:
        model_budget.model_budget_require_for_call(owner_id=own.pk)  # no budget of its own: goes on
    with pytest.raises(JobFailed):
        model_budget.model_budget_require_for_call(owner_id=default.pk)

    assert len(queries) == 1, [q["sql"] for q in queries]


def test_the_operator_sets_a_clients_limit_in_the_admin_and_it_applies_within_the_key_cache(
    make_api: Callable[..., Api], settings: Any
) -> None:
    # Given a client submitting, its key remembered by the API for a short while
    settings.API_KEY_CACHE_SECONDS = 0.2
    api = make_api()
    assert [api.post("/api/jobs/", json=HELLO).status_code for _ in range(2)] == [202, 202]
    http, url = operator(), f"/admin/core/client/{api.client.pk}/change/"
    form = {"name": api.client.name, "submit_rate_per_minute": "", "read_rate_per_minute": "",
            "max_unfinished_jobs": "", "model_tokens_per_day": ""}

    # The form says what an empty field means, with the setting's value now
    page = http.get(url).content.decode()
    assert f"Empty: API_SUBMIT_RATE_PER_MINUTE, now {settings.API_SUBMIT_RATE_PER_MINUTE}." in page
    assert f"Empty: MODEL_TOKENS_PER_CLIENT_PER_DAY, now {settings.MODEL_TOKENS_PER_CLIENT_PER_DAY}." in page

    # When the operator enters a negative limit, it is refused and nothing changes
    negative = http.post(url, {**form, "max_unfinished_jobs": "-1"})
    assert negative.status_code == 200 and "greater than or equal to 0" in negative.content.decode()
    assert Client.objects.get(pk=api.client.pk).max_unfinished_jobs is None

    # When they cut its submissions to 3 a minute
    saved = http.post(url, {**form, "submit_rate_per_minute": "3"})
    assert saved.status_code == 302, saved.content.decode()[:2000]
    assert Client.objects.get(pk=api.client.pk).submit_rate_per_minute == 3

    # Then, once the API's memory of the key has expired, its next submissions are held to it
    time.sleep(0.3)
    assert [api.post("/api/jobs/", json=HELLO).status_code for _ in range(2)] == [202, 429]
