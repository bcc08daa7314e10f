"""Every list's `page_size` says the most items a page holds, and that is what the list returns
when asked for far more: before, `GET /api/webhook-endpoints/` said 500 and returned 100."""
from __future__ import annotations

import re
from collections.abc import Callable

from django.utils import timezone

from core.models import Client
from jobs.models import Job, JobResult
from tests.conftest import Api
from webhooks.models import Delivery, Endpoint, Event

HELLO = "api.tasks.hello_world"


def _jobs(owner: Client, count: int) -> None:
    now = timezone.now()
    Job.objects.bulk_create(Job(owner=owner, job_name=HELLO, dispatched_at=now) for _ in range(count))


def _results(owner: Client, count: int) -> None:
    JobResult.objects.bulk_create(JobResult(owner=owner, task_name=HELLO, result={"n": n}) for n in range(count))


def _endpoints(owner: Client, count: int) -> None:
    Endpoint.objects.bulk_create(Endpoint(owner=owner, url=f"https://example.com/{n}") for n in range(count))


def _deliveries(owner: Client, count: int, job: Job) -> None:
    event = Event.objects.create(owner=owner, subject_id=job.id, event_type="job.succeeded", body=b"{}")
    Delivery.objects.bulk_create(
        Delivery(event=event, owner=owner, subject_id=job.id, url="https://example.com/hook", state="failed")
        for _ in range(count)
    )


# operationId -> rows enough for it to list, given the client, how many, and the job in its path.
MAKERS: dict[str, Callable[[Client, int, Job], None]] = {
    "list_jobs": lambda owner, count, _: _jobs(owner, count),
    "list_results": lambda owner, count, _: _results(owner, count),
    "list_webhook_endpoints": lambda owner, count, _: _endpoints(owner, count),
    "list_job_deliveries": _deliveries,
    "list_deliveries": _deliveries,
}


def test_each_lists_page_size_states_the_most_it_returns(make_api: Callable[..., Api], committed_spec: dict) -> None:
    # Given every list operation of the spec, and what its page_size says
    lists = []
    for template, item in committed_spec["paths"].items():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "page_size":
                    stated = re.search(r"default (\d+); larger values give (\d+)\.", parameter["description"])
                    assert stated, (template, parameter["description"])
                    lists.append((operation["operationId"], template, int(stated[1]), int(stated[2])))
    assert len(lists) >= 5, lists

    answers = []
    for operation_id, template, default, most in lists:
        # each with one more item than it says a page holds, for a client of its own
        api = make_api()
        job = Job.objects.create(owner=api.client, job_name=HELLO, status="SUCCESS")
        MAKERS[operation_id](api.client, most + 1, job)
        path = re.sub(r"\{[^}]+\}", str(job.id), template)

        # When it is asked for a hundred times more, and for its default
        asked = api.get(path, params={"page_size": most * 100})
        plain = api.get(path)
        answers.append((operation_id, default, most, asked, plain))

    # Then a page holds what its page_size says
    for operation_id, default, most, asked, plain in answers:
        assert asked.status_code == 200 and plain.status_code == 200, (operation_id, asked.text, plain.text)
        assert len(asked.json()["results"]) == most, (operation_id, most, len(asked.json()["results"]))
        assert len(plain.json()["results"]) == default, (operation_id, default, len(plain.json()["results"]))
