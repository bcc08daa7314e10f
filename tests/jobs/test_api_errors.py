"""Bad input gets one clear error shape, and nothing changes (no job, nothing enqueued)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from jobs.models import Job
from tests.conftest import Api

HELLO = "api.tasks.hello_world"


@pytest.fixture
def client_api(make_api: Callable[..., Api]) -> Api:
    return make_api()


def assert_error(response: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


def post_raw(api: Api, body: bytes, content_type: str = "application/json") -> requests.Response:
    return api.post("/api/jobs/", data=body, headers={"Content-Type": content_type})


def test_unknown_job_name_names_the_valid_ones(client_api: Api) -> None:
    error = assert_error(client_api.post("/api/jobs/", json={"job_name": "nope"}), 400, "unknown_job_name")

    assert HELLO in error["message"]
    assert HELLO in error["details"]["valid_job_names"]
    assert Job.objects.count() == 0


def test_a_real_celery_task_that_is_not_a_job_type_is_refused(client_api: Api) -> None:
    for name in ("celery.backend_cleanup", "jobs.run_step", "jobs.dispatch_sweep"):
        assert_error(client_api.post("/api/jobs/", json={"job_name": name}), 400, "unknown_job_name")
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    ("job_name", "payload", "field"),
    [
        ("api.tasks.long_running_task", {}, "duration"),
        ("api.tasks.long_running_task", {"duration": -1}, "duration"),
        ("api.tasks.long_running_task", {"duration": 3601}, "duration"),
        ("api.tasks.long_running_task", {"duration": "5"}, "duration"),
        ("api.tasks.long_running_task", {"duration": True}, "duration"),
        ("api.tasks.long_running_task", {"duration": 1, "extra": 1}, "extra"),
        (HELLO, {"message": 5}, "message"),
        (HELLO, {"message": "x" * 10_001}, "message"),
        ("api.tasks.generate_checklist_from_guidelines", {"guidelines": 3}, "guidelines"),
    ],
)
def test_payload_that_fails_its_schema_gets_field_errors(
    client_api: Api, settings: Any, job_name: str, payload: dict[str, Any], field: str
) -> None:
    settings.OPENAI_API_KEY = "sk-test"  # availability is checked before the payload
    response = client_api.post("/api/jobs/", json={"job_name": job_name, "payload": payload})

    error = assert_error(response, 400, "invalid_payload")
    assert field in error["details"]["payload"]
    assert Job.objects.count() == 0


def test_payload_must_be_an_object(client_api: Api) -> None:
    response = client_api.post("/api/jobs/", json={"job_name": HELLO, "payload": [1]})
    assert_error(response, 400, "invalid_payload")


@pytest.mark.parametrize(
    "body",
    [b"{", b"{'a': 1}", b"[1, 2", b"nul", b"", b"   "],
)
def test_malformed_json_is_400(client_api: Api, body: bytes) -> None:
    assert_error(post_raw(client_api, body), 400)
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"job_name": "api.tasks.hello_world", "payload": {"message": NaN}}', "NaN"),
        (b'{"job_name": "api.tasks.hello_world", "payload": {"message": Infinity}}', "Infinity"),
        (b'{"job_name": "x", "job_name": "api.tasks.hello_world"}', "duplicate key"),
        (b'{"job_name": "api.tasks.hello_world", "payload": {"message": "\xff\xfe"}}', "UTF-8"),
    ],
)
def test_json_that_is_not_strictly_valid_is_refused(client_api: Api, body: bytes, needle: str) -> None:
    error = assert_error(post_raw(client_api, body), 400, "malformed_json")

    assert needle in error["message"]
    assert Job.objects.count() == 0


def test_a_non_json_content_type_is_415(client_api: Api) -> None:
    response = post_raw(client_api, b"job_name=api.tasks.hello_world", "application/x-www-form-urlencoded")
    assert_error(response, 415, "unsupported_media_type")
    assert_error(post_raw(client_api, b"<job/>", "text/xml"), 415)
    assert Job.objects.count() == 0


def test_a_body_over_the_limit_is_413(client_api: Api) -> None:
    big = b'{"job_name": "api.tasks.hello_world", "payload": {"message": "' + b"x" * (1024 * 1024) + b'"}}'

    assert_error(post_raw(client_api, big), 413, "payload_too_large")
    assert Job.objects.count() == 0


def test_json_nested_too_deep_is_400(client_api: Api) -> None:
    deep = b'{"job_name": "api.tasks.save_task_result_test_task", "payload": {"a": ' + b"[" * 100 + b"]" * 100 + b"}}"
    very_deep = b"[" * 100_000 + b"]" * 100_000

    assert_error(post_raw(client_api, deep), 400, "json_too_deep")
    assert_error(post_raw(client_api, very_deep), 400, "json_too_deep")
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "/relative/path",
        "ftp://example.com/hook",
        "javascript:alert(1)",
        "http://",
        "http://example.com/a\r\nX-Injected: 1",
        "http://user:pass@example.com/hook",
    ],
)
def test_a_bad_callback_url_is_400(client_api: Api, url: str) -> None:
    response = client_api.post("/api/jobs/", json={"job_name": HELLO, "callback_url": url})

    assert_error(response, 400)
    assert Job.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        {"job_name": 5},
        {"job_name": None},
        {"job_name": ["api.tasks.hello_world"]},
        {"job_name": HELLO, "webhook_events": ["job.exploded"]},
        {"job_name": HELLO, "webhook_events": "job.succeeded"},
        {"job_name": HELLO, "callback_url": 7},
        {},
    ],
)
def test_wrong_types_are_400(client_api: Api, body: dict[str, Any]) -> None:
    assert_error(client_api.post("/api/jobs/", json=body), 400)
    assert Job.objects.count() == 0


def test_the_body_must_be_an_object(client_api: Api) -> None:
    assert_error(client_api.post("/api/jobs/", json=[{"job_name": HELLO}]), 400)


def test_unknown_urls_answer_the_json_error_shape(client_api: Api) -> None:
    assert_error(client_api.get("/api/nothing-here/"), 404, "not_found")
    assert_error(client_api.get("/no/such/page"), 404, "not_found")


def test_unknown_or_malformed_job_ids_are_404(client_api: Api) -> None:
    assert_error(client_api.get("/api/jobs/00000000-0000-0000-0000-000000000000/"), 404)
    assert_error(client_api.get("/api/jobs/not-a-uuid/"), 404)
    assert_error(client_api.get("/api/results/999999/"), 404)


def test_wrong_method_is_405_in_the_error_shape(client_api: Api) -> None:
    assert_error(client_api.request("DELETE", "/api/jobs/"), 405, "method_not_allowed")


def test_invalid_list_filters_are_400(client_api: Api) -> None:
    assert_error(client_api.get("/api/jobs/?status=EXPLODED"), 400, "invalid_filter")
    assert_error(client_api.get("/api/jobs/?created_after=yesterday"), 400, "invalid_filter")
