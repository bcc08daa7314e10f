"""`manage.py client_delete`: the operator's way to delete a client too large for the admin (whose
deletion would outlast gunicorn's request timeout), by its id or its name, asked to confirm
unless --yes, saying what goes with it."""
from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from core.models import ApiKey, Client
from core.services import api_key_create, client_create
from jobs.models import Job, JobEvent, JobResult

pytestmark = pytest.mark.django_db

HELLO = "api.tasks.hello_world"


def _client_with_jobs(name: str, count: int) -> Client:
    owner = client_create(name=name)
    api_key_create(client=owner)
    jobs = Job.objects.bulk_create([Job(owner=owner, job_name=HELLO, status=Job.Status.SUCCESS) for _ in range(count)])
    JobEvent.objects.bulk_create([JobEvent(job=job, owner=owner, job_name=HELLO, event_type="job.succeeded", body="{}")
                                  for job in jobs])
    JobResult.objects.bulk_create([JobResult(owner=owner, job=job, task_name=HELLO, result="hi") for job in jobs])
    return owner


def test_the_command_deletes_a_client_named_with_all_it_owns_and_says_what_went() -> None:
    # Given a client with jobs, their events and results, and another client
    owner = _client_with_jobs("leaving", 5)
    other = _client_with_jobs("staying", 2)

    # When the operator deletes it by name, without being asked
    out = io.StringIO()
    call_command("client_delete", "leaving", "--yes", stdout=out)

    # Then it is gone with all it owns, the other client untouched, and the output said what went
    assert not Client.objects.filter(pk=owner.pk).exists()
    assert not Job.objects.filter(owner_id=owner.pk).exists()
    assert not JobEvent.objects.filter(owner_id=owner.pk).exists()
    assert not JobResult.objects.filter(owner_id=owner.pk).exists()
    assert not ApiKey.objects.filter(client_id=owner.pk).exists()
    assert Job.objects.filter(owner_id=other.pk).count() == 2
    output = out.getvalue()
    assert str(owner.pk) in output and "Jobs: 5" in output and "Job results: 5" in output and "Deleted in" in output


def test_the_command_asks_to_confirm_and_deletes_nothing_unless_told_yes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a client with jobs, named by its id
    owner = _client_with_jobs("leaving", 3)

    # When the operator answers anything but "yes", then nothing is deleted
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    with pytest.raises(CommandError, match="Nothing was deleted"):
        call_command("client_delete", str(owner.pk), stdout=io.StringIO())
    assert Job.objects.filter(owner_id=owner.pk).count() == 3

    # And with no terminal to answer on, neither
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(CommandError, match="--yes"):
        call_command("client_delete", str(owner.pk), stdout=io.StringIO())
    assert Client.objects.filter(pk=owner.pk).exists()

    # And answering "yes" deletes it
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    call_command("client_delete", str(owner.pk), stdout=io.StringIO())
    assert not Client.objects.filter(pk=owner.pk).exists()
    assert not Job.objects.filter(owner_id=owner.pk).exists()


def test_the_command_refuses_a_client_it_cannot_find() -> None:
    client_create(name="present")
    with pytest.raises(CommandError, match="No client"):
        call_command("client_delete", "absent", "--yes", stdout=io.StringIO())
    assert Client.objects.filter(name="present").exists()
