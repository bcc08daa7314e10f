"""Input PostgreSQL cannot store or compare answers 400 in the error shape, never 500, on every
way in: JSON bodies (keys and values at any depth), query strings, paths and headers."""
from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from jobs.models import IdempotencyKey, Job
from tests.conftest import Api
from tests.fakes.openai_server import FakeOpenAI
from tests.jobs.test_api_errors import assert_error

SAVE = "api.tasks.save_task_result_test_task"
HELLO = "api.tasks.hello_world"
JOB_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def client_api(make_api: Callable[..., Api]) -> Api:
    return make_api()


def post_text(api: Api, path: str, text: str, **headers: str) -> object:
    # `text` holds JSON escapes as the client wrote them (\\u0000, \\ud800), sent as UTF-8.
    return api.post(path, data=text.encode(), headers={"Content-Type": "application/json", **headers})


UNSTORABLE_BODIES = {
    "nul in a payload value": f'{{"job_name": "{SAVE}", "payload": {{"a": [{{"b": "x\\u0000"}}]}}}}',
    "nul in a payload key": f'{{"job_name": "{SAVE}", "payload": {{"a": {{"\\u0000": 1}}}}}}',
    "lone high surrogate in a value": f'{{"job_name": "{SAVE}", "payload": {{"k": "\\ud800"}}}}',
    "lone low surrogate in a value": f'{{"job_name": "{SAVE}", "payload": {{"k": ["\\uDFFF"]}}}}',
    "lone surrogate in a key": f'{{"job_name": "{SAVE}", "payload": {{"a\\udc00": 1}}}}',
    "reversed surrogate pair": f'{{"job_name": "{SAVE}", "payload": {{"k": "\\ude00\\ud83d"}}}}',
    "lone surrogate in job_name": '{"job_name": "api.tasks.hello_world\\ud800"}',
    "lone surrogate in an unknown field": f'{{"job_name": "{HELLO}", "extra": "\\ud800"}}',
    "lone surrogate in callback_url": f'{{"job_name": "{HELLO}", "callback_url": "http://e.com/\\ud800"}}',
}


@pytest.mark.parametrize("path", ["/api/jobs/", "/api/job/"])
@pytest.mark.parametrize("body", UNSTORABLE_BODIES.values(), ids=UNSTORABLE_BODIES.keys())
def test_json_postgresql_cannot_store_is_a_400_and_creates_nothing(
    client_api: Api, path: str, body: str
) -> None:
    plain = post_text(client_api, path, body)
    # The Idempotency-Key path fingerprints the whole body (unknown fields too) before storing.
    keyed = post_text(client_api, path, body, **{"Idempotency-Key": "k-1"})

    error = assert_error(plain, 400, "invalid_json")
    assert_error(keyed, 400, "invalid_json")
    assert error["details"]["character"] in error["message"]
    assert Job.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0


@pytest.mark.parametrize("path", ["/api/jobs/", "/api/job/"])
@pytest.mark.parametrize("number", ["1e400", "-1.5e309", "1" + "0" * 400 + ".0"])
def test_a_payload_number_python_reads_as_infinity_is_a_400(
    client_api: Api, path: str, number: str
) -> None:
    # jsonb cannot store an infinity: the payload's field refuses it (JSON cannot express one).
    body = f'{{"job_name": "{SAVE}", "payload": {{"k": [{number}]}}}}'

    assert_error(post_text(client_api, path, body), 400, "invalid")
    assert_error(post_text(client_api, path, body, **{"Idempotency-Key": "k-1"}), 400, "invalid")
    assert Job.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0


def test_escaped_characters_postgresql_can_store_are_accepted(client_api: Api) -> None:
    # A surrogate pair (an escaped emoji, as json.dumps writes it), other control characters,
    # and the six characters of a literal backslash-u0000.
    body = f'{{"job_name": "{SAVE}", "payload": {{"\\ud83d\\ude00": "\\u0001\\\\u0000", "n": 1e308}}}}'

    response = post_text(client_api, "/api/jobs/", body)

    assert response.status_code == 202, response.text
    assert response.json()["payload"] == {"\U0001f600": "\x01\\u0000", "n": 1e308}


@pytest.mark.parametrize(
    "path",
    [
        "/api/jobs/?job_name=%00",
        "/api/jobs/?status=SUCCESS%00",
        "/api/jobs/?created_after=2026-01-01%00",
        "/api/jobs/?cursor=%00",
        "/api/jobs/?page_size=1%00",
        "/api/jobs/?%00=1",
        "/api/results/?task_name=a%00b",
        f"/api/jobs/{JOB_ID}/deliveries/?cursor=%00",
        "/api/job/?job_id=%00",
        f"/api/jobs/{JOB_ID}/?x=%00",
        "/api/jobs/?job_name=%ED%A0%80",  # an encoded surrogate: not UTF-8
        "/api/results/?task_name=%FF",
    ],
)
def test_a_query_string_with_nul_or_not_utf8_is_a_400(client_api: Api, path: str) -> None:
    assert_error(client_api.get(path), 400, "invalid_query")


def test_the_query_string_guard_covers_the_admin_and_unauthenticated_requests(
    make_api: Callable[..., Api],
) -> None:
    anonymous = Api(make_api().base_url, None)

    assert_error(anonymous.get("/admin/jobs/job/?q=%00"), 400, "invalid_query")
    assert_error(anonymous.get("/healthz?x=%00"), 400, "invalid_query")


def test_a_path_with_nul_is_a_400(client_api: Api) -> None:
    assert_error(client_api.get("/api/jobs/%00/"), 400, "invalid_path")
    assert_error(client_api.get("/admin/jobs/job/%00/change/"), 400, "invalid_path")


def test_query_strings_in_utf8_still_work(client_api: Api) -> None:
    response = client_api.get("/api/jobs/", params={"job_name": "é\U0001f600"})

    assert response.status_code == 200, response.text
    assert response.json()["results"] == []


@pytest.mark.parametrize("key", ["a\x00b", "tab\there", "\x7f", "line\x0bbreak"])
def test_an_idempotency_key_with_control_characters_is_a_400(client_api: Api, key: str) -> None:
    for path in ("/api/jobs/", "/api/job/"):
        response = client_api.post(path, json={"job_name": HELLO}, headers={"Idempotency-Key": key})
        assert_error(response, 400, "invalid_header")
    assert Job.objects.count() == 0


def test_an_idempotency_key_outside_ascii_is_accepted(client_api: Api) -> None:
    first = client_api.post("/api/jobs/", json={"job_name": HELLO}, headers={"Idempotency-Key": "café"})
    again = client_api.post("/api/jobs/", json={"job_name": HELLO}, headers={"Idempotency-Key": "café"})

    assert first.status_code == 202, first.text
    assert again.json()["id"] == first.json()["id"]


def test_an_idempotency_key_in_utf8_is_a_key_of_its_bytes(served: Api) -> None:
    # Sent as UTF-8, to gunicorn (the test server strips any Unicode space off a header): the
    # bytes 0x80-0xA0 of `€` (E2 82 AC) and `à` (C3 A0) were taken for control characters (400),
    # and a trailing 0xA0 for white space, stripped.
    for key in ["€uro", "ключ", "文件", "😀", "voilà"]:
        first = served.post("/api/jobs/", json={"job_name": HELLO}, headers={"Idempotency-Key": key.encode()})
        again = served.post("/api/jobs/", json={"job_name": HELLO}, headers={"Idempotency-Key": key.encode()})
        # The key less its last byte is another key
        other = served.post("/api/jobs/", json={"job_name": HELLO}, headers={"Idempotency-Key": key.encode()[:-1]})

        assert first.status_code == 202, (key, first.text)
        assert again.json()["id"] == first.json()["id"]
        assert other.status_code == 202, (key, other.text)
        assert other.json()["id"] != first.json()["id"], key


@pytest.mark.parametrize("value", ["Bearer \x00", "Bearer jak_\x00x", "Bearer é", "Bearer \x7f\x01", "\x00"])
def test_a_strange_authorization_header_is_a_401(client_api: Api, value: str) -> None:
    response = client_api.get("/api/jobs/", headers={"Authorization": value})

    assert_error(response, 401)


@pytest.mark.parametrize("path", ["/api/jobs/", "/api/jobs/batch/"])
def test_a_cancel_after_past_the_last_representable_year_is_a_400(client_api: Api, path: str) -> None:
    body = {"job_name": HELLO} if path == "/api/jobs/" else {"jobs": [{"job_name": HELLO}]}

    response = client_api.post(path, json=body, headers={"Cancel-After": "999999999h"})

    assert_error(response, 400, "invalid_header")
    assert Job.objects.count() == 0


def _submitted_with_cancel_after(api: Api, value: str) -> tuple[int, dict]:
    """The status and body of a submission whose Cancel-After header is `value`'s Latin-1 bytes,
    as they are (requests refuses a value with whitespace other than SP and HTAB around it)."""
    address = urlsplit(api.base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request("POST", "/api/jobs/", body=json.dumps({"job_name": HELLO}), headers={
            "Authorization": f"Bearer {api.key}", "Content-Type": "application/json", "Cancel-After": value,
        })
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_cancel_after_with_whitespace_other_than_https_is_a_400(served: Api) -> None:
    # Through gunicorn, which strips a header's SP and HTAB alone (the test suite's live server
    # strips Python's whitespace). HTTP's whitespace is SP and HTAB: a Latin-1 no-break space (or
    # NEL, 0x85) was read as one, `\xa05\xa0` as 5 s.
    for value in ["\xa05\xa0", "5\xa0s", "\x855", "5\xa0"]:
        status, body = _submitted_with_cancel_after(served, value)

        assert status == 400, (value, body)
        assert body["error"]["code"] == "invalid_header", (value, body)
    assert Job.objects.count() == 0
    # and SP and HTAB are whitespace still
    status, body = _submitted_with_cancel_after(served, " \t90 s\t ")
    assert status == 202, body
    assert Job.objects.get().deadline is not None


@pytest.mark.parametrize("field", ["run_at", "deadline"])
@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+10:00", "9999-12-31T23:59:59-10:00", "10000-01-01T00:00:00Z"])
def test_a_submitted_time_out_of_range_is_a_400(client_api: Api, field: str, value: str) -> None:
    response = client_api.post("/api/jobs/", json={"job_name": HELLO, field: value})

    assert field in assert_error(response, 400, "invalid")["details"]
    assert Job.objects.count() == 0


@pytest.mark.parametrize("path", ["/api/jobs/", "/api/jobs/batch/"])
@pytest.mark.parametrize("retry", [
    {"max_attempts": True, "backoff_seconds": 0},
    {"max_attempts": 2, "backoff_seconds": False},
    {"max_attempts": "2", "backoff_seconds": 0},
    {"max_attempts": "١", "backoff_seconds": 0},  # Arabic-Indic 1: int() reads it
    {"max_attempts": 2, "backoff_seconds": "1_0"},  # int() reads 10
    {"max_attempts": 2.5, "backoff_seconds": 0},
], ids=["true", "false", "string", "arabic-indic digit", "underscore", "fraction"])
def test_a_retry_policy_that_is_not_json_numbers_is_a_400(client_api: Api, path: str, retry: dict[str, object]) -> None:
    job = {"job_name": "api.tasks.generate_checklist_from_guidelines", "payload": {"guidelines": "x"}, "retry": retry}

    response = client_api.post(path, json={"jobs": [job]} if path.endswith("batch/") else job)

    # Python's int() read true as 1 and "١" or "1_0" as numbers: accepted as a policy
    error = assert_error(response, 400)
    assert "A valid integer is required." in str(error["details"])
    assert Job.objects.count() == 0


def test_a_retry_policy_of_whole_json_numbers_is_taken(client_api: Api, fake_openai: FakeOpenAI) -> None:
    response = client_api.post("/api/jobs/", json={
        "job_name": "api.tasks.generate_checklist_from_guidelines", "payload": {"guidelines": "x"},
        "retry": {"max_attempts": 2.0, "backoff_seconds": 0},
    })

    assert response.status_code == 202, response.text
    assert response.json()["retry"] == {"max_attempts": 2, "backoff_seconds": 0}
