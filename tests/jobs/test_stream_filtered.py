"""A client's stream of one job name (`GET /api/events/?job_name=`) reads each of the client's
events once, however few of them are of that name, and says how far it has read."""
from __future__ import annotations

from typing import Any

from jobs.models import Job, JobEvent
from tests.conftest import Api
from tests.jobs.test_streams import events_until_final, messages, stream


def test_a_stream_of_one_job_name_reads_past_the_clients_other_events_once_and_says_so(
    api: Api, settings: Any
) -> None:
    # Given a client whose history is 5,000 events of another job name, heartbeats each second
    settings.API_STREAM_HEARTBEAT_SECONDS = 1
    job = Job.objects.create(owner=api.client, job_name="api.tasks.long_running_task", status="SUCCESS")
    JobEvent.objects.bulk_create(
        JobEvent(job=job, owner=api.client, job_name=job.job_name, event_type="job.progress", body="{}")
        for _ in range(5000)
    )
    latest = JobEvent.objects.filter(owner=api.client).order_by("-id").values_list("id", flat=True)[0]

    # When it streams its hello_world events from the start of that history
    response = stream(api, "/api/events/?job_name=api.tasks.hello_world", **{"Last-Event-ID": "0"})
    lines = messages(response)
    try:
        assert next(lines) == {"retry": "1000"}

        # Then its first heartbeat is the id it has read up to, its latest event's (a reconnect
        # resumes from there), and the next a plain one: it read the history once, where each of
        # its reads, at every heartbeat and every event of the client's, read it all again
        assert next(lines) == {"id": str(latest)}
        assert next(lines) == {"comment": "heartbeat"}

        # And the events of the name that come after it are sent, each once
        created = api.submit("api.tasks.hello_world", {"message": "x"})
        received = events_until_final(lines)
    finally:
        response.close()
    assert [m["event"] for m in received] == ["job.started", "job.succeeded"]
    assert {m["data"]["data"]["id"] for m in received} == {created["id"]}
