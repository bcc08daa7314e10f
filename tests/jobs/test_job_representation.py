"""The fast job representation (polls, submissions, webhook events) equals JobSerializer's."""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from core.models import Client
from jobs.models import Job
from jobs.serializers import JobSerializer, job_representation

NOW = timezone.now()


@pytest.mark.parametrize(
    "fields",
    [
        {},  # just submitted
        {"status": "STARTED", "started_at": NOW, "progress": {"current": 1, "total": 3, "message": "step"}},
        {"status": "SUCCESS", "started_at": NOW, "finished_at": NOW + timedelta(seconds=1),
         "result": {"nested": [1, "two", None]}, "callback_url": "https://example.com/hook",
         "webhook_events": ["job.succeeded", "job.failed"]},
        {"status": "FAILURE", "finished_at": NOW, "error": {"type": "ValueError", "message": "bad"}},
        {"status": "REVOKED", "finished_at": NOW, "result": "text", "payload": {"message": "é ✓"}},
    ],
)
def test_job_representation_equals_the_serializer(fields: dict[str, Any]) -> None:
    fields = {"payload": {"message": "m"}, **fields}
    job = Job(id=uuid.uuid4(), owner=Client(id=uuid.uuid4(), name="x"), job_name="api.tasks.hello_world",
              created_at=NOW, **fields)

    assert job_representation(job) == dict(JobSerializer(job).data)
