"""A job is published as a Celery chain: its steps, then (with a callback) the delivery task."""
from __future__ import annotations

import pytest

from core.services import client_create
from jobs.dispatch import job_signatures
from jobs.models import Job

pytestmark = pytest.mark.django_db


def make_job(job_name: str, callback_url: str = "") -> Job:
    return Job(owner=client_create(name=f"c-{job_name}-{bool(callback_url)}"), job_name=job_name,
               callback_url=callback_url)


def test_a_job_with_a_callback_is_its_steps_then_the_delivery_task() -> None:
    job = make_job("api.tasks.generate_checklist_from_guidelines", "https://hooks.example.com/x")

    signatures = job_signatures(job=job)

    assert [s.task for s in signatures] == ["jobs.run_step"] * 3 + ["webhooks.deliveries_send_for_subject"]
    assert [s.kwargs.get("index") for s in signatures[:3]] == [0, 1, 2]
    assert signatures[0].options["task_id"] == str(job.id)  # the job's id is the root task id
    assert signatures[-1].kwargs == {"subject_id": str(job.id)}
    assert signatures[-1].immutable


def test_a_job_without_a_callback_is_only_its_steps() -> None:
    signatures = job_signatures(job=make_job("api.tasks.hello_world"))

    assert [s.task for s in signatures] == ["jobs.run_step"]
    assert signatures[0].options["queue"] == "jobs"
    assert signatures[0].options["soft_time_limit"] < signatures[0].options["time_limit"]


def test_the_first_message_and_the_tail_describe_their_arguments_as_celery_would() -> None:
    from celery.utils.saferepr import saferepr

    signatures = job_signatures(job=make_job("api.tasks.hello_world", "https://hooks.example.com/x"))

    # What monitors (Flower, celery events) show: given, not computed per publish, and the same.
    for signature in (signatures[0], signatures[-1]):
        assert signature.options["argsrepr"] == saferepr(signature.args) == "()"
        assert signature.options["kwargsrepr"] == saferepr(signature.kwargs)
