"""`manage.py jobs_fail_unknown_types`: the operator, who knows the deploy that removed or renamed a
job type is done, lists the unfinished jobs of types this code does not know and fails them at
once, rather than after the abandoned-job rule's 2 hours, each as that rule fails one (its error,
its client's places freed, its job.failed callback)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from core.services import client_create
from examples.receiver import Receiver
from jobs import unknown_types
from jobs.models import Job, JobCounts
from tests.conftest import REPO, Api, worker_env
from tests.locks import rows_held

RETIRED = "api.tasks.retired_in_a_deploy"
HELLO = "api.tasks.hello_world"


def command(*args: str) -> str:
    out = StringIO()
    call_command("jobs_fail_unknown_types", *args, stdout=out)
    return out.getvalue()


def unfinished_used(api: Api) -> int:
    return api.get("/api/limits/").json()["unfinished_jobs"]["used"]


def test_a_dry_run_lists_them_and_fail_fails_them_freeing_their_places_with_their_callbacks(
    api: Api, make_api: Callable[..., Api]
) -> None:
    # Given a client's jobs of a type the deploy removed, one queued and one running in an older
    # worker, each with a callback; its job of a known type scheduled for tomorrow; and another
    # client's job of the removed type
    with Receiver() as receiver:
        queued = Job.objects.create(owner=api.client, job_name=RETIRED, callback_url=receiver.url)
        running = Job.objects.create(owner=api.client, job_name=RETIRED, callback_url=receiver.url,
                                     status=Job.Status.STARTED, started_at=timezone.now())
        known = Job.objects.create(owner=api.client, job_name=HELLO, run_at=timezone.now() + timedelta(days=1))
        other = make_api(name="other-client")
        Job.objects.create(owner=other.client, job_name=RETIRED)

        # When the operator runs the command without --fail
        listed = command()

        # Then it lists them by type and client, and changes nothing
        assert f"{RETIRED}: 3 unfinished job(s)" in listed, listed
        assert f"client {api.client.name} ({api.client.pk}): 2" in listed, listed
        assert f"client other-client ({other.client.pk}): 1" in listed, listed
        assert HELLO not in listed
        assert "Dry run" in listed
        assert [api.get(f"/api/jobs/{job.pk}/").json()["status"] for job in (queued, running, known)] == [
            "PENDING", "STARTED", "PENDING"]
        assert unfinished_used(api) == 3

        # When they run it with --fail
        done = command("--fail")

        # Then the jobs of the removed type are failed with the abandoned-job rule's error, their
        # places freed, their callbacks sent; the job of a known type is left as it was
        assert "Failed 3 job(s)" in done, done
        for job in (queued, running):
            seen = api.get(f"/api/jobs/{job.pk}/").json()
            assert (seen["status"], seen["error"]["type"]) == ("FAILURE", "job_type_unknown"), seen
            assert RETIRED in seen["error"]["message"]
        assert api.get(f"/api/jobs/{known.pk}/").json()["status"] == "PENDING"
        assert (unfinished_used(api), unfinished_used(other)) == (1, 0)
        events = sorted((received.event["type"], received.event["data"]["id"])
                        for received in receiver.wait_for(2))
        assert events == sorted([("job.failed", str(queued.pk)), ("job.failed", str(running.pk))])
        assert command() == "No unfinished jobs of job types this code does not know.\n"


def test_a_job_that_finishes_while_they_are_failed_keeps_its_final_state(api: Api) -> None:
    # Given two queued jobs of a removed type, the first of which its client cancels just after
    # the command has read it (in the first of its batches of one), before it fails it
    first, second = sorted((Job.objects.create(owner=api.client, job_name=RETIRED) for _ in range(2)),
                           key=lambda job: job.pk)
    canceled: list[int] = []

    def cancel_after_the_read(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.startswith("SELECT") and 'NOT ("jobs_job"."job_name" IN' in sql and not canceled:
            canceled.append(api.post(f"/api/jobs/{first.pk}/cancel/").status_code)
        return result

    # When the operator fails them
    with connection.execute_wrapper(cancel_after_the_read):
        failed = unknown_types.jobs_of_unknown_types_fail(batch=1)

    # Then the canceled one stays canceled, its place freed once; the other is failed
    assert (canceled, failed) == ([202], 1), canceled
    assert api.get(f"/api/jobs/{first.pk}/").json()["status"] == "REVOKED"
    assert api.get(f"/api/jobs/{second.pk}/").json()["status"] == "FAILURE"
    assert api.get("/api/limits/").json()["unfinished_jobs"]["used"] == 0



@pytest.mark.django_db(transaction=True)
def test_failing_them_says_how_far_it_got_and_ctrl_c_stops_it_between_two_jobs(tmp_path: Path) -> None:
    # Given more jobs of a removed type than the command fails in one batch, the 502nd of which
    # (in the order it reads them) a transaction holds, so that the command waits on it
    owner = client_create(name="many-retired")
    Job.objects.bulk_create(Job(owner=owner, job_name=RETIRED) for _ in range(unknown_types.FAIL_BATCH + 3))
    ids = list(Job.objects.order_by("pk").values_list("pk", flat=True))
    total = len(ids)
    held = f"SELECT 1 FROM jobs_job WHERE id = '{ids[unknown_types.FAIL_BATCH + 1]}' FOR UPDATE"

    with rows_held(held) as blocked:
        # When the operator runs the command with --fail, its output through a pipe (`| tee`)
        # (its log lines to a file: each job's finish logs one, which would fill a pipe not read)
        errors = open(tmp_path / "stderr", "w+")  # noqa: SIM115 (read after it ends)
        command = subprocess.Popen(
            [sys.executable, "manage.py", "jobs_fail_unknown_types", "--fail"], cwd=REPO, env=worker_env(),
            stdout=subprocess.PIPE, stderr=errors, text=True,
        )
        try:
            # Then it says how far it has got after each batch, as it goes
            assert command.stdout is not None
            seen = [command.stdout.readline() for _ in range(4)]
            assert seen[-1] == f"  failed {unknown_types.FAIL_BATCH} of {total} so far\n", seen
            blocked(1)

            # And Ctrl-C, while it fails the held job, stops it once that job is failed
            command.send_signal(signal.SIGINT)
        except BaseException:
            command.kill()
            raise
    out, _ = command.communicate(timeout=60)
    errors.close()
    err = (tmp_path / "stderr").read_text()

    # Then it exits non-zero saying how many it failed, and every job is either failed or left
    # as it was (none half-done: the counts of its client's unfinished jobs agree)
    failed = unknown_types.FAIL_BATCH + 2
    assert command.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    # (and its client's waiting jobs were published once a batch, not once a job: each publish
    # logged a warning of those of them of the removed type, 500 lines a batch)
    assert err.count("Not publishing") <= 2, err
    assert f"Interrupted: failed {failed} of {total} job(s)" in err, (out, err)
    statuses = dict(Job.objects.values_list("pk", "status"))
    assert [statuses[pk] for pk in ids] == ["FAILURE"] * failed + ["PENDING"], statuses
    assert unfinished_count(owner) == 1

    # And run again, it fails the rest
    assert "Failed 1 job(s)" in command_output("--fail")
    assert unfinished_count(owner) == 0


def command_output(*args: str) -> str:
    out = subprocess.run([sys.executable, "manage.py", "jobs_fail_unknown_types", *args], cwd=REPO,
                         env=worker_env(), capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def unfinished_count(owner: Any) -> int:
    return JobCounts.objects.get(owner=owner).unfinished


def test_a_job_waiting_at_the_running_cap_behind_them_runs_once_they_are_failed(api: Api, settings: Any) -> None:
    # Given a client at its running cap with jobs of a removed type, running in an older worker,
    # and a job of a known type waiting behind them. At the cap the suite's beat and worker run
    # with too (tests/settings.py): a cap of 1 set here alone left the beat's sweep room to publish
    # the waiting job once past its grace, and the test passed without the command's publish
    cap = settings.JOB_MAX_RUNNING_PER_CLIENT
    assert cap > 0
    Job.objects.bulk_create(Job(owner=api.client, job_name=RETIRED, status=Job.Status.STARTED,
                                started_at=timezone.now()) for _ in range(cap))
    waiting = Job.objects.create(owner=api.client, job_name=HELLO, payload={"message": "next"})

    # When the operator fails the jobs of the removed type
    assert unknown_types.jobs_of_unknown_types_fail() == cap

    # Then the waiting job is published at once, and runs
    assert Job.objects.get(pk=waiting.pk).dispatched_at is not None
    deadline = timezone.now() + timedelta(seconds=60)
    while (seen := api.get(f"/api/jobs/{waiting.pk}/").json())["status"] != "SUCCESS":
        assert timezone.now() < deadline, seen
        time.sleep(0.2)
    assert seen["result"] == "hello world next"
