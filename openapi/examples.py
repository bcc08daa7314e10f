"""Example bodies shown in the spec, shared by the operations and the webhooks."""
from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample

JOB_EXAMPLE: dict[str, Any] = {
    "id": "3f0c5a6e-8a0e-4c59-9a53-6d1e3b2f7c11",
    "job_name": "api.tasks.long_running_task",
    "status": "STARTED",
    "progress": {"current": 3, "total": 10, "message": "slept 3 of 10 s"},
    "payload": {"duration": 10, "message": "hi"},
    "result": None,
    "error": None,
    "callback_url": "https://example.com/hooks/jobs",
    "webhook_events": ["job.canceled", "job.failed", "job.succeeded"],
    "webhook_endpoints": True,
    "metadata": {"order": "42"},
    "scheduled_for": None,
    "deadline": None,
    "aborted": False,
    "attempt": 1,
    "retry": None,
    "created_at": "2026-11-28T14:00:00.000000Z",
    "started_at": "2026-11-28T14:00:00.150000Z",
    "finished_at": None,
}

JOB_DONE_EXAMPLE: dict[str, Any] = {
    **JOB_EXAMPLE,
    "status": "SUCCESS",
    "progress": {"current": 10, "total": 10, "message": "done"},
    "result": "Slept for 10 seconds. Message: hi",
    "finished_at": "2026-11-28T14:00:10.200000Z",
}

RESULT_EXAMPLE: dict[str, Any] = {
    "id": 42,
    "job_id": "9b2d7c0a-1f4e-4b8e-8d5a-2c6f0e9a1b33",
    "task_name": "api.tasks.save_task_result_test_task",
    "result": {"invoice": 1234, "total": "19.90"},
    "created_at": "2026-11-28T14:01:00.000000Z",
}

SUBMIT_EXAMPLES = [
    OpenApiExample(
        "hello_world",
        value={"job_name": "api.tasks.hello_world", "payload": {"message": "there"}},
        request_only=True,
    ),
    OpenApiExample(
        "long_running_with_webhooks",
        value={
            "job_name": "api.tasks.long_running_task",
            "payload": {"duration": 10, "message": "hi"},
            "callback_url": "https://example.com/hooks/jobs",
        },
        request_only=True,
    ),
    OpenApiExample(
        "save_result",
        value={
            "job_name": "api.tasks.save_task_result_test_task",
            "payload": {"invoice": 1234, "total": "19.90"},
        },
        request_only=True,
    ),
]

JOB_TYPE_EXAMPLE: dict[str, Any] = {
    "name": "api.tasks.hello_world",
    "description": "Returns 'hello world <message>'.",
    "payload_schema": {"type": "object", "properties": {"message": {"type": "string"}}},
    "persists_result": False,
    "available": True,
    "unavailable_reason": None,
    "max_payload_bytes": 65536,
    "retry_limits": None,
}

DELIVERY_EXAMPLE: dict[str, Any] = {
    "id": 7,
    "webhook_id": "msg_2b5e0e6d2f6a4c1e9a7d3f7b8c9d0e1f",
    "event_type": "job.succeeded",
    "endpoint": None,
    "url": "https://example.com/hooks/jobs",
    "state": "succeeded",
    "redelivery": False,
    "attempt_count": 2,
    "next_attempt_at": None,
    "created_at": "2026-11-28T14:00:10.300000Z",
    "finished_at": "2026-11-28T14:00:15.420000Z",
    "attempts": [
        {
            "number": 1,
            "started_at": "2026-11-28T14:00:10.310000Z",
            "duration_ms": 15000,
            "status_code": None,
            "response_body": "",
            "error": "timeout after 15 s",
        },
        {
            "number": 2,
            "started_at": "2026-11-28T14:00:15.400000Z",
            "duration_ms": 20,
            "status_code": 200,
            "response_body": "ok",
            "error": "",
        },
    ],
}

REDELIVERY_EXAMPLE: dict[str, Any] = {
    **DELIVERY_EXAMPLE,
    "id": 8,
    "state": "pending",
    "redelivery": True,
    "attempt_count": 0,
    "finished_at": None,
    "attempts": [],
}

SECRET_EXAMPLE: dict[str, Any] = {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}


# A real cursor (what `next` holds), for a list answer's example.
LIMITS_EXAMPLE: dict[str, Any] = {
    "submissions_per_minute": {"limit": 6000},
    "reads_per_minute": {"limit": 6000},
    "writes_per_minute": {"limit": 600},
    "sensitive_writes_per_minute": {"limit": 30},
    "unfinished_jobs": {"limit": 10000, "used": 12},
    "running_jobs": {"limit": 4, "used": 4},
    "result_bytes": {"limit": 1073741824, "used": 5242880},
    "model_tokens_today": {"limit": 2000000, "used": 579, "renews_at": "2026-01-16T00:00:00Z"},
    "webhook_endpoints": {"limit": 20, "used": 2},
}

NEXT_PAGE_EXAMPLE = (
    "http://127.0.0.1:8000/api/jobs/?cursor=cz0tY3JlYXRlZF9hdCUyQy1wayZwPTIwMjYtMTEtMjgrMTMlM0E1"
    "OSUzQTU4LjEyMDAwMCUyQjAwJTNBMDA%3D"
)


def list_item(example: dict[str, Any]) -> dict[str, Any]:
    """An example as a list shows it: here nothing is left out."""
    return {**example, "omitted": []}


def page(*results: Any, next_url: str | None = None) -> dict[str, Any]:
    """A list answer's body: `results` in the envelope with its page links."""
    return {"results": list(results), "next": next_url, "previous": None}

BATCH_EXAMPLE = OpenApiExample(
    "batch",
    value={
        "jobs": [
            {"job_name": "api.tasks.hello_world", "payload": {"message": "one"}, "metadata": {"order": "42"}},
            {"job_name": "api.tasks.hello_world", "payload": {"message": "two"},
             "run_at": "2026-11-29T09:00:00Z"},
        ]
    },
    request_only=True,
)

ENDPOINT_EXAMPLE: dict[str, Any] = {
    "id": "5b1f8c2e-4d7a-4e8b-9c0d-1e2f3a4b5c6d",
    "url": "https://example.com/hooks/all-jobs",
    "description": "Billing's receiver",
    "event_types": ["job.canceled", "job.failed", "job.succeeded"],
    "enabled": True,
    "disabled_reason": None,
    "disabled_at": None,
    "headers": {"X-Team": "billing"},
    "rate_limit_per_second": None,
    "created_at": "2026-11-28T13:00:00.000000Z",
    "health": {
        "succeeded_24h": 412,
        "failed_24h": 3,
        "last_success_at": "2026-11-28T14:00:15.420000Z",
        "last_failure_at": "2026-11-28T11:20:02.000000Z",
        "consecutive_failures": 0,
        "disabled_reason": None,
    },
}
