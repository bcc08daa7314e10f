"""A retry whose backoff is longer than a sweep waits on the job's row, not as an ETA message in a
worker: a worker takes an ETA message at once and holds it unacked until its time, so a worker
killed meanwhile left the retry to the broker's visibility timeout (2 h with Redis), not its
backoff (tests/faults/test_step_publish.py kills one)."""
from __future__ import annotations

import os
import time

import redis
from django.conf import settings
from django.utils import timezone

from jobs.models import Job
from tests.conftest import Api
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.jobs.test_checklist import checklist_reply, guidelines_for, summary_reply

CHECKLIST = "api.tasks.generate_checklist_from_guidelines"


def broker_messages_of(job_id: str) -> list[bytes]:
    """The messages of the job this run's broker holds: queued, or taken by a worker and not
    acknowledged yet (kombu's `unacked` hash), each of which names its job in its headers."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    held: list[bytes] = []
    for key in broker.scan_iter(match=f"{os.environ['CELERY_BROKER_KEY_PREFIX']}*", count=1000):
        kind = broker.type(key)
        values = broker.hvals(key) if kind == b"hash" else broker.lrange(key, 0, -1) if kind == b"list" else []
        held += [value for value in values if job_id.encode() in value]
    return held


def no_message_left(job_id: str, timeout: float = 15) -> bool:
    """Whether the broker soon holds none of the job's messages (its failed run's own message is
    acknowledged as that run's task ends, just after the job shows RETRY)."""
    deadline = time.monotonic() + timeout
    while broker_messages_of(job_id):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_retry_with_a_backoff_longer_than_a_sweep_waits_on_the_row_with_no_message_then_runs(
    api: Api, fake_openai: FakeOpenAI
) -> None:
    # Given a checklist job allowed two runs a minute apart (a sweep is a second here), whose
    # first summary is malformed
    scenario = fake_openai.scenario()
    scenario.add(Reply.answer("not JSON"), summary_reply(scenario), checklist_reply())
    job = api.submit(CHECKLIST, {"guidelines": guidelines_for(scenario)},
                     retry={"max_attempts": 2, "backoff_seconds": 60})

    # When its first run has failed
    waiting = api.wait(job["id"], until=lambda seen: (seen["status"], seen["attempt"]) == ("RETRY", 2))

    # Then, while it waits out its backoff, no worker (nor queue) holds a message of it: the retry
    # waits on the job's row, handed to no broker, for the sweeper
    assert no_message_left(job["id"]), broker_messages_of(job["id"])
    row = Job.objects.get(pk=job["id"])
    assert (row.status, row.next_step, row.dispatched_at) == (Job.Status.RETRY, 0, None)
    assert waiting["error"]["type"] == "invalid_model_output"
    assert len(scenario.requests) == 1

    # When its backoff has run out (moved to now, rather than waited for)
    Job.objects.filter(pk=job["id"]).update(retry_at=timezone.now())

    # Then the sweeper publishes it, and its second run succeeds, the model asked once a call
    done = api.wait(job["id"], timeout=60)
    assert (done["status"], done["attempt"], done["error"]) == ("SUCCESS", 2, None)
    assert len(scenario.requests) == 3
