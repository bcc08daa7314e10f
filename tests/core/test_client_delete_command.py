"""`manage.py client_delete`: the operator's way to delete a client too large for the admin (whose
deletion would outlast gunicorn's request timeout), by its id or its name, asked to confirm
unless --yes, saying what goes with it."""
from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client as HttpClient
from django.utils import timezone

from core.models import ApiKey, Client
from core.services import api_key_create, client_create
from jobs.models import Job, JobEvent, JobResult
from jobs.submission import SubmissionRequest, job_submit

pytestmark = pytest.mark.django_db

HELLO = "api.tasks.hello_world"


def _client_with_jobs(name: str, count: int) -> Client:
    owner, _key = _client_with_jobs_and_key(name, count)
    return owner


def _client_with_jobs_and_key(name: str, count: int) -> tuple[Client, str]:
    owner = client_create(name=name)
    key = api_key_create(client=owner)
    jobs = Job.objects.bulk_create([Job(owner=owner, job_name=HELLO, status=Job.Status.SUCCESS) for _ in range(count)])
    JobEvent.objects.bulk_create([JobEvent(job=job, owner=owner, job_name=HELLO, event_type="job.succeeded", body="{}")
                                  for job in jobs])
    JobResult.objects.bulk_create([JobResult(owner=owner, job=job, task_name=HELLO, result="hi") for job in jobs])
    return owner, key


class _StoppedAt(io.StringIO):
    """The command's output, which stops it (as Ctrl-C does) when it writes `line`."""

    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line

    def write(self, text: str) -> int:
        if self.line in text:
            raise KeyboardInterrupt
        return super().write(text)


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


def test_the_command_deletes_a_batch_at_a_time_and_what_is_added_meanwhile_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a client with 25 jobs, their events and results, and another client; each batch said
    monkeypatch.setattr("core.management.commands.client_delete.PROGRESS_EVERY_SECONDS", 0)
    owner = _client_with_jobs("leaving", 25)
    other = _client_with_jobs("staying", 2)
    out = io.StringIO()
    added: list[Job] = []
    later = timezone.now() + timedelta(hours=1)  # out of the session worker's sight

    def a_job_submitted_meanwhile(text: str) -> int:
        # A submission authenticated before the keys were revoked (another API process remembers
        # them for API_KEY_CACHE_SECONDS) adds its job with its event
        if "Job events: 10 deleted" in text and not added:
            job, _created = job_submit(owner=owner, request=SubmissionRequest(job_name=HELLO, run_at=later))
            added.append(job)
        return io.StringIO.write(out, text)

    out.write = a_job_submitted_meanwhile  # type: ignore[method-assign]

    # When the operator deletes it 10 rows a transaction
    call_command("client_delete", "leaving", "--yes", "--batch-rows", "10", stdout=out)

    # Then each kind went in batches of 10, said as they went, and the client is gone with all
    # it owns, the job added meanwhile too (its event with it); the other client is untouched
    output = out.getvalue()
    assert "Jobs: 10 deleted" in output and "Jobs: 20 deleted" in output and "Jobs: 26 deleted" in output
    assert "Job results: 25 deleted" in output and "Deleted in" in output
    assert added and not Job.objects.filter(pk=added[0].pk).exists()
    assert not JobEvent.objects.filter(job_id=added[0].pk).exists()
    assert not Client.objects.filter(pk=owner.pk).exists()
    assert not Job.objects.filter(owner_id=owner.pk).exists()
    assert not JobEvent.objects.filter(owner_id=owner.pk).exists()
    assert not ApiKey.objects.filter(client_id=owner.pk).exists()
    assert Job.objects.filter(owner_id=other.pk).count() == 2
    assert JobEvent.objects.filter(owner_id=other.pk).count() == 2


def test_a_deletion_stopped_midway_leaves_the_client_unusable_and_is_finished_when_run_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a client with 25 jobs, their events and results, and its key that works; each batch said
    monkeypatch.setattr("core.management.commands.client_delete.PROGRESS_EVERY_SECONDS", 0)
    owner, key = _client_with_jobs_and_key("leaving", 25)
    api = HttpClient(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.get("/api/jobs/").status_code == 200

    # When its deletion is stopped (Ctrl-C) after some batches of its job events
    with pytest.raises(KeyboardInterrupt):
        call_command("client_delete", "leaving", "--yes", "--batch-rows", "10", stdout=_StoppedAt("Job events: 20 deleted"))

    # Then the client is still there with fewer rows, each whole (a batch went or did not), its
    # jobs all there (they go after what references them), and its key refused
    assert Client.objects.filter(pk=owner.pk).exists()
    assert JobEvent.objects.filter(owner_id=owner.pk).count() == 5
    assert Job.objects.filter(owner_id=owner.pk).count() == 25
    assert api.get("/api/jobs/").status_code == 401

    # And run again, the command lists what is left and finishes the deletion
    out = io.StringIO()
    call_command("client_delete", "leaving", "--yes", "--batch-rows", "10", stdout=out)
    assert "Jobs: 25" in out.getvalue() and "Job events: 5" in out.getvalue() and "Deleted in" in out.getvalue()
    assert not Client.objects.filter(pk=owner.pk).exists()
    assert not Job.objects.filter(owner_id=owner.pk).exists()
    assert not JobEvent.objects.filter(owner_id=owner.pk).exists()


def test_the_command_says_each_kind_at_most_every_few_seconds_and_its_final_count(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a client with 150 jobs, their events and results, deleted a row a transaction (450
    # batches) faster than PROGRESS_EVERY_SECONDS: the clock stands still
    owner = _client_with_jobs("leaving", 150)
    monkeypatch.setattr("core.management.commands.client_delete.monotonic", lambda: 1000.0)

    # When the operator deletes it
    out = io.StringIO()
    call_command("client_delete", "leaving", "--yes", "--batch-rows", "1", stdout=out)

    # Then each kind is said twice: its first batch, so that the operator sees it start, and its
    # final count; not a line a batch (the kinds' order is the deletion's)
    said = [line.strip() for line in out.getvalue().splitlines() if line.endswith(" deleted")]
    assert sorted(said, key=lambda line: line.split(":")[0]) == [
        "Job events: 1 deleted", "Job events: 150 deleted",
        "Job results: 1 deleted", "Job results: 150 deleted",
        "Jobs: 1 deleted", "Jobs: 150 deleted",
    ]
    assert not Client.objects.filter(pk=owner.pk).exists()


def test_the_command_says_a_kind_again_once_the_interval_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a client with 12 jobs deleted a row a transaction, each batch a second after the last
    _client_with_jobs("leaving", 12)
    ticks = iter(range(10_000))
    monkeypatch.setattr("core.management.commands.client_delete.monotonic", lambda: float(next(ticks)))

    # When the operator deletes it
    out = io.StringIO()
    call_command("client_delete", "leaving", "--yes", "--batch-rows", "1", stdout=out)

    # Then its jobs are said every other batch (PROGRESS_EVERY_SECONDS, 2 s), and the last
    jobs = [line.strip() for line in out.getvalue().splitlines() if line.strip().startswith("Jobs:")]
    assert jobs[1:] == [f"Jobs: {count} deleted" for count in (1, 3, 5, 7, 9, 11, 12)]
