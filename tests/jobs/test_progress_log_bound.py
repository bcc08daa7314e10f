"""A job's event log holds its latest `job.progress` event only, whatever the job's length: each
progress event carries the job (its payload and metadata), and a `long_running_task` of an hour
logged 3,600 of them of 18 KB, 65 MB at its caps, kept JOB_RETENTION_DAYS and counted in no quota."""
from __future__ import annotations

import json
from typing import Any

from jobs.models import JobEvent
from tests.conftest import Api
from tests.jobs.test_streams import messages, stream

# The job's caps: a 10,000-character message, 16 metadata values of 500 characters.
MESSAGE = "m" * 10_000
METADATA = {f"k{n}": "v" * 500 for n in range(16)}


def test_a_long_jobs_log_keeps_its_latest_progress_event_only(api: Api) -> None:
    # Given a job that reports its progress 5 times (a tick a second, then done)
    created = api.submit("api.tasks.long_running_task", {"duration": 4, "message": MESSAGE}, metadata=METADATA)

    # When it has finished
    job = api.wait(created["id"])
    assert job["status"] == "SUCCESS", job

    # Then its log holds three events, the latest progress among them: one of 18 KB a second
    # was kept for every second the job ran
    logged = list(JobEvent.objects.filter(job_id=created["id"]).order_by("id").values_list("event_type", "body"))
    assert [event_type for event_type, _ in logged] == ["job.started", "job.progress", "job.succeeded"]
    assert json.loads(logged[1][1])["data"]["progress"] == {"current": 4, "total": 4, "message": "done"}
    # And a stream replaying it from its start gets those three, in order
    replayed: list[dict[str, Any]] = [
        m for m in messages(stream(api, f"/api/jobs/{created['id']}/events/", **{"Last-Event-ID": "0"}))
        if "event" in m
    ]
    assert [m["event"] for m in replayed] == ["job.started", "job.progress", "job.succeeded"]
    assert replayed[1]["data"]["data"]["progress"]["message"] == "done"
