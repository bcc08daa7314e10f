"""Job control through HTTP and the real worker: deadlines (`deadline`, `Cancel-After`), scheduled
jobs (`run_at`), metadata and its filter, batch submission, and a job's retry policy."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.utils import timezone

from examples.receiver import Receiver
from jobs.models import Job, JobCounts
from tests.conftest import FINAL, Api, script_output
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.jobs.test_checklist import checklist_reply, guidelines_for, summary_reply

HELLO = "api.tasks.hello_world"
LONG = "api.tasks.long_running_task"
CHECKLIST = "api.tasks.generate_checklist_from_guidelines"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def parsed(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_deadline_cancels_a_running_job_and_its_webhook_says_why(api: Api) -> None:
    # Given a long job that must be done within 6 seconds (time for the suite's shared worker to
    # start it under load: with 2, a busy moment let the deadline pass while it was still queued)
    receiver = Receiver().start()
    job = api.submit(LONG, {"duration": 30}, callback_url=receiver.url, deadline=iso(timezone.now() + timedelta(seconds=6)))
    assert job["deadline"] is not None

    # When the deadline passes while it runs
    done = api.wait(job["id"], timeout=20)

    # Then it is canceled with error.type deadline_exceeded, not aborted (it had started)
    assert done["status"] == "REVOKED"
    assert done["error"]["type"] == "deadline_exceeded"
    assert done["aborted"] is False and done["started_at"] is not None
    [received] = receiver.wait_for(1)
    receiver.stop()
    assert received.event["type"] == "job.canceled"
    assert received.event["data"]["error"]["type"] == "deadline_exceeded"


def test_cancel_after_ends_a_job_that_never_started_as_aborted(api: Api, broker_down: None) -> None:
    # Given a job with Cancel-After: 1 s, accepted while the broker is down (it waits on its row;
    # the answer comes after the broker's 2 s connection timeout, past the deadline)
    waiting = api.post("/api/jobs/", json={"job_name": HELLO}, headers={"Cancel-After": "1s"}).json()

    # When its deadline passes before the job could be published (beat runs the deadlines)
    done = api.wait(waiting["id"], timeout=15)

    # Then it was aborted: canceled without ever starting
    assert (done["status"], done["aborted"], done["started_at"]) == ("REVOKED", True, None)
    assert done["error"]["type"] == "deadline_exceeded"


def test_a_scheduled_job_runs_at_its_time_and_not_before(api: Api) -> None:
    # Given a job scheduled 3 seconds ahead
    run_at = timezone.now() + timedelta(seconds=3)
    job = api.submit(HELLO, {"message": "later"}, run_at=iso(run_at))
    assert (job["status"], parsed(job["scheduled_for"])) == ("PENDING", run_at.replace(microsecond=run_at.microsecond))

    # When it is polled until it ends
    time.sleep(1.5)
    assert api.get(f"/api/jobs/{job['id']}/").json()["status"] == "PENDING"
    done = api.wait(job["id"], timeout=20)

    # Then it started after its time
    assert done["status"] == "SUCCESS"
    assert parsed(done["started_at"]) >= run_at


def test_a_scheduled_job_can_be_canceled_while_it_waits(api: Api) -> None:
    job = api.submit(HELLO, run_at=iso(timezone.now() + timedelta(minutes=10)))

    canceled = api.post(f"/api/jobs/{job['id']}/cancel/")

    assert canceled.status_code == 202
    done = api.get(f"/api/jobs/{job['id']}/").json()
    assert (done["status"], done["aborted"], done["started_at"]) == ("REVOKED", True, None)


def test_scheduling_rules_are_checked_at_the_edge(api: Api, settings: Any) -> None:
    now = timezone.now()
    cases = {
        "too far ahead": {"run_at": iso(now + timedelta(days=31))},
        "deadline before run_at": {"run_at": iso(now + timedelta(minutes=5)), "deadline": iso(now + timedelta(minutes=1))},
        "deadline passed": {"deadline": iso(now - timedelta(seconds=1))},
        "not a time": {"run_at": "tomorrow"},
    }
    for name, fields in cases.items():
        response = api.post("/api/jobs/", json={"job_name": HELLO, **fields})
        assert response.status_code == 400, name
    both = api.post("/api/jobs/", json={"job_name": HELLO, "deadline": iso(now + timedelta(minutes=1))},
                    headers={"Cancel-After": "60"})
    assert both.status_code == 400
    assert api.post("/api/jobs/", json={"job_name": HELLO}, headers={"Cancel-After": "soon"}).status_code == 400
    assert not Job.objects.filter(owner=api.client).exists()


def test_metadata_is_kept_returned_and_filtered_within_its_owner(api: Api, make_api: Callable[..., Api]) -> None:
    # Given jobs with metadata, and another client's job with the same metadata
    ours = api.submit(HELLO, metadata={"order": "42", "team": "a"})
    api.submit(HELLO, metadata={"order": "43"})
    other = make_api()
    other.submit(HELLO, metadata={"order": "42"})

    # When the owner filters its list by metadata
    found = api.get("/api/jobs/", params={"metadata[order]": "42"}).json()["results"]
    both = api.get("/api/jobs/", params={"metadata[order]": "42", "metadata[team]": "a"}).json()["results"]
    none = api.get("/api/jobs/", params={"metadata[order]": "42", "metadata[team]": "b"}).json()["results"]

    # Then only its own matching job comes back, with its metadata
    assert [job["id"] for job in found] == [ours["id"]] == [job["id"] for job in both]
    assert none == [] and found[0]["metadata"] == {"order": "42", "team": "a"}
    assert api.get(f"/api/jobs/{ours['id']}/").json()["metadata"] == {"order": "42", "team": "a"}


# `make run`'s embedded database: the same filter, over HTTP, against SQLite.
EMBEDDED_FILTER_SCRIPT = """
import json
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.test import Client as HttpClient
from core.services import api_key_create, client_create
from jobs.models import Job
owner, other = client_create(name="embedded"), client_create(name="other")
ours = Job.objects.create(owner=owner, job_name="api.tasks.hello_world", metadata={"order": "42", "team": "a"})
Job.objects.create(owner=owner, job_name="api.tasks.hello_world", metadata={"order": "43", "team": "a"})
Job.objects.create(owner=other, job_name="api.tasks.hello_world", metadata={"order": "42", "team": "a"})
http = HttpClient(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION="Bearer " + api_key_create(client=owner))
def found(query):
    response = http.get("/api/jobs/?" + query)
    return [response.status_code, [job["id"] == str(ours.pk) for job in response.json().get("results", [])]]
print(json.dumps([found(q) for q in ("metadata[order]=42", "metadata[team]=a&metadata[order]=42",
                                     "metadata[order]=44", "metadata[team]=b")]))
"""


def test_the_metadata_filter_works_on_make_runs_embedded_database(tmp_path: Path) -> None:
    # Given make run's SQLite database with jobs labelled by two clients
    # When the owner filters its list by metadata (a number-like value, a word, none matching)
    found = script_output(EMBEDDED_FILTER_SCRIPT, database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
                          data_dir=tmp_path)

    # Then only its own matching job comes back, as on PostgreSQL (it answered no job for "42",
    # and 500 for a word)
    assert json.loads(found) == [
        [200, [True]], [200, [True]], [200, []], [200, []],
    ]

def test_metadata_limits_are_checked(api: Api) -> None:
    for metadata in ({f"k{n}": "v" for n in range(17)}, {"k" * 41: "v"}, {"k": "v" * 501}, {"k": 1}, {"a[b]": "v"}, []):
        assert api.post("/api/jobs/", json={"job_name": HELLO, "metadata": metadata}).status_code == 400, metadata


def test_too_many_metadata_keys_are_refused_for_their_number_before_each_is_checked(
    make_api: Callable[..., Api],
) -> None:
    # Given more metadata keys than a job may have, each value too long as well
    api = make_api()
    metadata = {f"k{n}": "v" * 501 for n in range(17)}

    response = api.post("/api/jobs/", json={"job_name": HELLO, "metadata": metadata})

    # Then they are refused for their number, none of them checked (55,000 keys in a 1 MiB
    # body held the process's request turn 242 ms, checked one by one)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == {"metadata": ["At most 16 keys."]}


def test_a_batch_with_one_bad_item_is_refused_whole(api: Api) -> None:
    jobs = [{"job_name": HELLO, "payload": {"message": str(n)}} for n in range(1000)]
    jobs[500] = {"job_name": HELLO, "payload": {"message": 5}}
    jobs[700] = {"job_name": "nope"}

    response = api.post("/api/jobs/batch/", json={"jobs": jobs})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_batch"
    assert [(item["index"], item["code"]) for item in error["details"]["jobs"]] == [
        (500, "invalid_payload"), (700, "unknown_job_name"),
    ]
    assert not Job.objects.filter(owner=api.client).exists()


def test_a_batch_runs_every_job_in_order_once_per_idempotency_key(api: Api) -> None:
    jobs = [{"job_name": HELLO, "payload": {"message": str(n)}, "metadata": {"n": str(n)}} for n in range(20)]

    first = api.post("/api/jobs/batch/", json={"jobs": jobs}, headers={"Idempotency-Key": "batch-1"})
    again = api.post("/api/jobs/batch/", json={"jobs": jobs}, headers={"Idempotency-Key": "batch-1"})

    assert first.status_code == again.status_code == 202
    ids = [job["id"] for job in first.json()["jobs"]]
    assert [job["metadata"]["n"] for job in first.json()["jobs"]] == [str(n) for n in range(20)]
    assert [job["id"] for job in again.json()["jobs"]] == ids
    assert Job.objects.filter(owner=api.client).count() == 20
    results = [api.wait(job_id)["result"] for job_id in ids]
    assert results == [f"hello world {n}" for n in range(20)]
    assert api.post("/api/jobs/batch/", json={"jobs": []}).status_code == 400
    too_many = api.post("/api/jobs/batch/", json={"jobs": [{"job_name": HELLO}] * 1001})
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "batch_too_large"


def test_a_batch_counts_each_job_against_the_rate(make_api: Callable[..., Api], settings: Any) -> None:
    settings.API_SUBMIT_RATE_PER_MINUTE = 10
    api = make_api()

    over_rate = api.post("/api/jobs/batch/", json={"jobs": [{"job_name": HELLO}] * 11})
    within = api.post("/api/jobs/batch/", json={"jobs": [{"job_name": HELLO}] * 8})
    single = api.post("/api/jobs/", json={"job_name": HELLO})
    over_now = api.post("/api/jobs/batch/", json={"jobs": [{"job_name": HELLO}] * 2})

    # A batch larger than the rate could never fit: refused for its size, spending 1
    assert over_rate.status_code == 400 and over_rate.json()["error"]["code"] == "batch_too_large"
    assert (within.status_code, single.status_code) == (202, 202)
    assert over_now.status_code == 429 and int(over_now.headers["Retry-After"]) > 0


def test_a_batch_counts_each_job_against_the_unfinished_cap(make_api: Callable[..., Api], settings: Any) -> None:
    settings.JOB_MAX_UNFINISHED_PER_CLIENT = 3
    api = make_api()
    later = iso(timezone.now() + timedelta(minutes=5))  # scheduled: they stay unfinished

    first = api.post("/api/jobs/", json={"job_name": HELLO, "run_at": later})
    refused = api.post("/api/jobs/batch/", json={"jobs": [{"job_name": HELLO, "run_at": later}] * 3})
    accepted = api.post("/api/jobs/batch/", json={"jobs": [{"job_name": HELLO, "run_at": later}] * 2})

    assert first.status_code == 202
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_unfinished_jobs"
    assert accepted.status_code == 202
    assert Job.objects.filter(owner=api.client).count() == 3


def test_a_retryable_job_runs_again_after_a_failure(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    # Given a checklist job whose first summary is malformed, with a retry policy of 2 runs
    scenario = fake_openai.scenario()
    scenario.add(Reply.answer("not JSON"), summary_reply(scenario), checklist_reply())
    job = api.submit(CHECKLIST, {"guidelines": guidelines_for(scenario)}, retry={"max_attempts": 2, "backoff_seconds": 1})
    assert job["retry"] == {"max_attempts": 2, "backoff_seconds": 1} and job["attempt"] == 1

    # When it has run
    seen: list[tuple[str, int]] = []
    done = api.wait(job["id"], until=lambda job: seen.append((job["status"], job["attempt"])) or job["status"] in FINAL)

    # Then the failure was retried (visible as RETRY, attempt 2, the error) and it succeeded
    assert done["status"] == "SUCCESS" and done["attempt"] == 2 and done["error"] is None
    assert ("RETRY", 2) in seen
    assert api.post("/api/jobs/", json={"job_name": HELLO, "retry": {"max_attempts": 2, "backoff_seconds": 1}}).status_code == 400
    limits = {"max_attempts": 6, "backoff_seconds": 1}
    assert api.post("/api/jobs/", json={"job_name": CHECKLIST, "payload": {"guidelines": "x"}, "retry": limits}).status_code == 400


def test_a_job_waiting_out_its_retry_backoff_is_canceled_at_once(api: Api, fake_openai: FakeOpenAI) -> None:
    # Given a checklist job whose first run failed, waiting a minute before its second
    scenario = fake_openai.scenario()
    scenario.add(Reply.answer("not JSON"))
    job = api.submit(CHECKLIST, {"guidelines": guidelines_for(scenario)}, retry={"max_attempts": 2, "backoff_seconds": 60})
    api.wait(job["id"], until=lambda job: (job["status"], job["attempt"]) == ("RETRY", 2))

    # When its client cancels it
    canceled = api.post(f"/api/jobs/{job['id']}/cancel/")

    # Then it is canceled at once, not once the backoff has run out (it holds no worker), and
    # its places under the caps are free
    assert canceled.status_code == 202
    done = api.wait(job["id"], timeout=5)
    assert (done["status"], done["aborted"]) == ("REVOKED", False)
    assert JobCounts.objects.get(owner=api.client).running == 0


def test_a_batch_over_the_size_limit_is_told_so_whatever_the_rate(api: Api) -> None:
    # Given a batch of more jobs than a batch may hold, and more than the client's submission
    # rate (6000 a minute): a 429 would have the client wait and send it again, for ever
    too_many = [{"job_name": HELLO}] * 6001

    response = api.post("/api/jobs/batch/", json={"jobs": too_many})

    # Then it is refused for its size, and spends nothing of the rate (had it spent its 6001,
    # nothing more would fit; a small batch, so that its jobs end before the test's flush)
    assert response.status_code == 400 and response.json()["error"]["code"] == "batch_too_large"
    assert api.post("/api/jobs/batch/", json={"jobs": [{"job_name": HELLO}] * 10}).status_code == 202


def test_a_failed_run_whose_retry_would_come_after_the_deadline_fails_the_job(api: Api, fake_openai: FakeOpenAI) -> None:
    # Given a checklist job due within 20 seconds whose retry policy waits a minute between runs
    scenario = fake_openai.scenario()
    scenario.add(Reply.answer("not JSON"))
    job = api.submit(CHECKLIST, {"guidelines": guidelines_for(scenario)}, deadline=iso(timezone.now() + timedelta(seconds=20)),
                     retry={"max_attempts": 2, "backoff_seconds": 60})

    # When its first run fails
    done = api.wait(job["id"], until=lambda job: job["status"] in FINAL or job["status"] == "RETRY", timeout=10)

    # Then it fails with the run's error at once: its next run could only start past its
    # deadline, so it would wait for nothing and end canceled, the failure's reason lost
    assert (done["status"], done["attempt"]) == ("FAILURE", 1)
    assert done["error"]["type"] == "invalid_model_output"
