"""A filtered list's query string read strictly (core/filters.py `query_filtered`): a parameter the
list does not take, or one given twice, is `400 invalid_filter` naming it, where the list answered
every row (or used the last value) as though the client had asked for that."""
from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job, JobResult
from tests.conftest import Api
from tests.jobs.test_api_cursors import relative
from tests.jobs.test_api_errors import assert_error

JOB = str(uuid.uuid4())


@pytest.mark.parametrize(
    ("path", "name", "takes"),
    [
        ("/api/jobs/?stauts=FAILURE", "stauts", ["status", "created_after", "metadata[<key>]", "cursor", "page_size"]),
        (f"/api/deliveries/?subject_id={JOB}", "subject_id", ["job", "endpoint", "state", "cursor", "page_size"]),
        ("/api/results/?job_name=x", "job_name", ["task_name", "cursor", "page_size"]),
        ("/api/jobs/?status=FAILURE&limit=5", "limit", ["status", "page_size"]),
    ],
)
def test_a_parameter_the_list_does_not_take_is_a_400_naming_it(
    make_api: Callable[..., Api], path: str, name: str, takes: list[str]
) -> None:
    error = assert_error(make_api().get(path), 400, "invalid_filter")
    assert list(error["details"]) == [name]
    [problem] = error["details"][name]
    for parameter in takes:
        assert parameter in problem, problem


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/jobs/?status=PENDING&status=SUCCESS", "status"),
        ("/api/jobs/?page_size=1&page_size=2", "page_size"),
        ("/api/jobs/?cursor=a&cursor=b", "cursor"),
        ("/api/jobs/?format=json&format=json", "format"),
        ("/api/results/?task_name=a&task_name=b", "task_name"),
        (f"/api/deliveries/?job={JOB}&job={JOB}", "job"),
        ("/api/deliveries/?state=failed&state=pending", "state"),
    ],
)
def test_a_parameter_given_twice_is_a_400_naming_it(make_api: Callable[..., Api], path: str, name: str) -> None:
    error = assert_error(make_api().get(path), 400, "invalid_filter")
    assert list(error["details"]) == [name]


def test_every_parameter_wrong_is_named_at_once(make_api: Callable[..., Api]) -> None:
    error = assert_error(make_api().get("/api/jobs/?stauts=x&job_name=a&job_name=b&page_size=2"), 400, "invalid_filter")
    assert set(error["details"]) == {"stauts", "job_name"}


def test_the_lists_answer_their_own_parameters(make_api: Callable[..., Api]) -> None:
    # Given a client's succeeded job, labelled, and its persisted result
    api = make_api()
    now = timezone.now()
    job = Job.objects.create(owner=api.client, job_name="api.tasks.hello_world", status=Job.Status.SUCCESS,
                             metadata={"team": "a"}, dispatched_at=now)
    JobResult.objects.create(owner=api.client, task_name="api.tasks.hello_world", result={"n": 1})
    after = (now - timedelta(minutes=1)).isoformat()

    # When it asks each list with every kind of parameter the list takes
    answers = {
        "jobs": api.get("/api/jobs/", params={
            "status": "SUCCESS", "job_name": "api.tasks.hello_world", "created_after": after,
            "metadata[team]": "a", "page_size": 5, "format": "json",
        }),
        "results": api.get("/api/results/", params={"task_name": "api.tasks.hello_world", "page_size": 5}),
        "deliveries": api.get("/api/deliveries/", params={
            "job": str(job.pk), "state": "failed", "event_type": "job.succeeded", "endpoint": JOB,
            "created_after": after, "created_before": (now + timedelta(minutes=1)).isoformat(), "page_size": 5,
        }),
    }

    # Then each answers 200 with what matches
    for name, answer in answers.items():
        assert answer.status_code == 200, (name, answer.text)
    assert [item["id"] for item in answers["jobs"].json()["results"]] == [str(job.pk)]
    assert len(answers["results"].json()["results"]) == 1
    assert answers["deliveries"].json()["results"] == []


def test_a_filtered_lists_next_link_is_followed(make_api: Callable[..., Api]) -> None:
    # Given five failed jobs and one succeeded, a minute apart
    api = make_api()
    now = timezone.now()
    jobs = Job.objects.bulk_create(
        Job(owner=api.client, job_name="api.tasks.hello_world", created_at=now - timedelta(minutes=minute),
            status=Job.Status.SUCCESS if minute == 2 else Job.Status.FAILURE, dispatched_at=now)
        for minute in range(6)
    )
    failed = [str(job.pk) for job in jobs if job.status == Job.Status.FAILURE]

    # When the client pages through its failed jobs two at a time, following `next`
    seen, url = [], "/api/jobs/?status=FAILURE&page_size=2"
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [job["id"] for job in page["results"]]
        url = page["next"] and relative(api, page["next"])

    # Then it is answered each failed job once, and only those
    assert seen == failed


def test_the_lists_without_filters_refuse_a_parameter_too(make_api: Callable[..., Api]) -> None:
    # Given a client's job (its deliveries' list) and its endpoints' list, neither with filters
    api = make_api()
    job = Job.objects.create(owner=api.client, job_name="api.tasks.hello_world", status=Job.Status.SUCCESS,
                             dispatched_at=timezone.now())
    lists = [f"/api/jobs/{job.pk}/deliveries/", "/api/webhook-endpoints/"]

    for path in lists:
        # When it asks with a parameter the list does not take, or its page size twice
        unknown = assert_error(api.get(f"{path}?state=failed"), 400, "invalid_filter")
        twice = assert_error(api.get(f"{path}?page_size=1&page_size=2"), 400, "invalid_filter")

        # Then each is refused naming it, and the list's own parameters still answer
        assert list(unknown["details"]) == ["state"], path
        assert "cursor" in unknown["details"]["state"][0], path
        assert list(twice["details"]) == ["page_size"], path
        assert api.get(f"{path}?page_size=1&format=json").status_code == 200, path


def test_a_query_of_many_unknown_parameters_is_answered_the_first_ten(make_api: Callable[..., Api]) -> None:
    # When a client sends a list three hundred parameters it does not take
    query = "&".join(f"p{n}=1" for n in range(300))
    answer = make_api().get(f"/api/jobs/?{query}")

    # Then the 400 names the first ten, each with what the list takes: an answer of a bounded
    # size, not one some thirty times the query's
    error = assert_error(answer, 400, "invalid_filter")
    assert list(error["details"]) == [f"p{n}" for n in range(10)]
    assert len(answer.content) < 5_000


def test_a_value_with_no_name_is_a_400_naming_it_so_and_an_empty_pair_is_ignored(make_api: Callable[..., Api]) -> None:
    # Given a client's failed job and its succeeded one
    api = make_api()
    for status in (Job.Status.FAILURE, Job.Status.SUCCESS):
        Job.objects.create(owner=api.client, job_name="api.tasks.hello_world", status=status,
                           dispatched_at=timezone.now())

    # When a URL builder with an empty key sends a value with no name
    error = assert_error(api.get("/api/jobs/?=FAILURE"), 400, "invalid_filter")

    # Then it is refused, named so that it reads as a name and not as a missing one
    assert list(error["details"]) == ["(empty name)"]
    assert "status" in error["details"]["(empty name)"][0]

    # And an empty pair, or two, with a filter asks nothing more: the filter alone answers
    for query in ("?&status=FAILURE", "?=&status=FAILURE", "?status=FAILURE&=&="):
        answer = api.get(f"/api/jobs/{query}")
        assert answer.status_code == 200, (query, answer.text)
        assert [job["status"] for job in answer.json()["results"]] == ["FAILURE"], query


def test_a_filters_value_and_a_metadata_filter_are_named_with_the_querys_other_problems(
    make_api: Callable[..., Api],
) -> None:
    # When a client's jobs query holds an unknown name, a status no job has, a malformed
    # metadata filter and a metadata key given twice
    query = "stauts=x&status=NEVER&metadata.team=a&metadata%5Bteam%5D=a&metadata%5Bteam%5D=b"
    error = assert_error(make_api().get(f"/api/jobs/?{query}"), 400, "invalid_filter")

    # Then the one 400 names each, where it named the unknown one alone and the next after each mend
    assert set(error["details"]) == {"stauts", "status", "metadata.team", "metadata[team]"}
    assert "metadata[<key>]" in error["details"]["metadata.team"][0]
    assert "more than once" in error["details"]["metadata[team]"][0]
