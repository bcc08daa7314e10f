"""A job's retry published by a sweeper whose clock runs ahead of the API's: its run begins before
its retry_at by the API's clock (by the skew: the sweeper reads retry_at on its own clock, as a
worker reads a short retry's countdown eta on its own), and a cancel arriving then is taken for
one of a job still waiting out its backoff, written REVOKED at once. The bound docs/reliability.md gives ("Limits"): the run that began goes no further than
its first cancel check, which the checklist makes before each model call."""
from __future__ import annotations

import pytest
from django.test import Client as DjangoClient
from django.utils import timezone

from core.services import api_key_create, client_create
from jobs import dispatch, tasks, transitions
from jobs.models import Job
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.locks import meanwhile

pytestmark = pytest.mark.django_db(transaction=True)

CHECKLIST = "api.tasks.generate_checklist_from_guidelines"


def test_a_retry_revoked_as_a_worker_ahead_of_the_api_begins_it_does_not_run(fake_openai: FakeOpenAI) -> None:
    # Given a checklist job whose first run failed, waiting out an hour's backoff by the API's
    # clock (its model would answer the retry)
    scenario = fake_openai.scenario()
    scenario.add(Reply.answer({"summary": f"Retry once. ({scenario.token})"}))
    owner = client_create(name=f"skew-{scenario.token[-8:]}")
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
    job = Job.objects.create(owner=owner, job_name=CHECKLIST, dispatched_at=timezone.now(), max_attempts=2,
                             retry_backoff_seconds=3600, payload={"guidelines": f"Retry once. ({scenario.token})"})
    assert transitions.job_start(job_id=job.id) is not None
    retrying = transitions.job_retry_later(job_id=job.id, error={"type": "Flaky", "message": "once"}, step=0,
                                           step_input=None)
    assert retrying is not None and retrying.status == Job.Status.RETRY

    # When a sweeper whose clock has passed the retry's retry_at publishes it (claims it on the
    # row), a worker takes its message, and the client's cancel (the API's clock: the job still
    # waits) arrives as the run begins
    Job.objects.filter(pk=job.id).update(dispatched_at=timezone.now())
    retrying.refresh_from_db()
    retry = dispatch.job_signatures(job=retrying)[0].kwargs
    with meanwhile(lambda: http.post(f"/api/jobs/{job.id}/cancel/").json()["status"],
                   at='UPDATE "jobs_job" SET "status"') as canceled:
        tasks.job_run_step.apply(kwargs=retry)

    # Then the job is revoked at once (as one still waiting), and its run stops at its first
    # cancel check: no model call behind the cancel
    assert canceled == ["REVOKED"]
    assert http.get(f"/api/jobs/{job.id}/").json()["status"] == "REVOKED"
    assert scenario.requests == []
