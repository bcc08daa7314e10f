"""Hypothesis throws arbitrary input at every way in (JSON bodies, query strings, cursors,
headers) through HTTP: the answer is never a 5xx, and every error has the one error shape.
A failure found here becomes a plain regression test in test_api_bad_input.py."""
from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_from_bytes, urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Api

# Fuzzing: not in `make test-fast` (README, "Two commands"). INPUT_FUZZ_EXAMPLES explores further.
pytestmark = pytest.mark.slow
EXAMPLES = settings(
    max_examples=int(os.environ.get("INPUT_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SAVE = "api.tasks.save_task_result_test_task"
JOB_ID = "00000000-0000-4000-8000-000000000000"
LISTS = ["/api/jobs/", "/api/results/", f"/api/jobs/{JOB_ID}/deliveries/", "/api/job/", "/api/deliveries/",
         "/api/webhook-endpoints/"]
PARAMETERS = ["job_name", "status", "created_after", "created_before", "task_name", "job_id",
              "cursor", "page_size", "metadata[k]", "endpoint", "job", "state", "event_type"]
# Moments at the ends of what Python and PostgreSQL hold, with offsets that take them past.
EDGE_MOMENTS = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999999Z",
                "0001-01-01T00:00:00Z", "2026-01-01T00:00:00+23:59"]

# Strings from every code point (U+0000 and lone surrogates included), leaning on the ones
# PostgreSQL refuses.
TEXT = st.text(st.characters(exclude_categories=()) | st.sampled_from(["\x00", "\ud800", "\udc00"]),
               max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=12,
)

BYTES = (st.binary(max_size=40) | TEXT.map(lambda text: text.encode("utf-8", "surrogatepass"))
         | st.sampled_from(EDGE_MOMENTS).map(str.encode))
# Values at the edges of what a field of a webhook endpoint (or its recovery) may be.
EDGE_VALUES = st.sampled_from([True, False, 0, -1, -0.0, 10**30, 1e308, 5e-324, "1e3", "NaN", "", *EDGE_MOMENTS])
ENDPOINT_FIELDS = ["url", "event_types", "description", "enabled", "headers", "rate_limit_per_second", "since",
                   "expire_previous_now"]


@pytest.fixture
def client_api(make_api: Callable[..., Api]) -> Api:
    return make_api()


def assert_answered(response: requests.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}, response.text


@EXAMPLES
@given(payload=JSON, extra=JSON, ascii_only=st.booleans())
def test_any_json_body_is_answered_without_a_5xx(client_api: Api, payload: Any, extra: Any, ascii_only: bool) -> None:
    body = {"job_name": SAVE, "payload": payload, "extra": extra}
    # NaN and infinities as Python writes them (refused as JSON), surrogates as \u escapes or
    # as raw (invalid UTF-8) bytes.
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", errors="surrogatepass")

    for path in ("/api/jobs/", "/api/job/"):
        assert_answered(client_api.post(path, data=raw, headers={"Content-Type": "application/json"}))


@EXAMPLES
@given(
    path=st.sampled_from(LISTS),
    pairs=st.lists(st.tuples(st.sampled_from(PARAMETERS) | st.binary(max_size=6), BYTES), max_size=3),
)
def test_any_query_string_is_answered_without_a_5xx(client_api: Api, path: str, pairs: list[tuple[Any, bytes]]) -> None:
    def encoded(value: str | bytes) -> str:
        return quote_from_bytes(value.encode() if isinstance(value, str) else value)

    query = "&".join(f"{encoded(name)}={encoded(value)}" for name, value in pairs)

    assert_answered(client_api.get(f"{path}?{query}"))


@EXAMPLES
@given(
    path=st.sampled_from(LISTS[:3]),
    tokens=st.dictionaries(st.sampled_from(["s", "o", "r", "p"]),
                           TEXT | st.sampled_from(["-created_at,-pk", "1", "0"])
                           | st.datetimes().map(str), max_size=4),
)
def test_any_cursor_is_answered_without_a_5xx(client_api: Api, path: str, tokens: dict[str, str]) -> None:
    text = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in tokens.items()})
    response = client_api.get(path, params={"cursor": base64.b64encode(text.encode()).decode()})

    assert_answered(response)


@EXAMPLES
@given(key=st.text(st.characters(max_codepoint=0xFF, exclude_characters="\r\n"), max_size=40))
def test_any_idempotency_key_is_answered_without_a_5xx(client_api: Api, key: str) -> None:
    # Headers travel as ISO-8859-1; requests refuses a value that starts with white space.
    response = client_api.post("/api/jobs/", json={"job_name": SAVE, "payload": {}},
                               headers={"Idempotency-Key": f"k{key}"})

    assert_answered(response)


@EXAMPLES
@given(body=st.dictionaries(st.sampled_from(ENDPOINT_FIELDS), JSON | EDGE_VALUES, max_size=4), ascii_only=st.booleans())
def test_any_webhook_endpoint_body_is_answered_without_a_5xx(client_api: Api, body: dict[str, Any], ascii_only: bool) -> None:
    endpoint = client_api.post("/api/webhook-endpoints/", json={"url": "http://127.0.0.1:9/hooks"}).json()["id"]
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", errors="surrogatepass")

    for method, path in [("POST", "/api/webhook-endpoints/"), ("PATCH", f"/api/webhook-endpoints/{endpoint}/"),
                         ("POST", f"/api/webhook-endpoints/{endpoint}/recover/")]:
        response = client_api.request(method, path, data=raw, headers={"Content-Type": "application/json"})
        assert_answered(response)
        if response.status_code in (200, 201):  # what was taken reads back
            assert_answered(client_api.get(response.headers.get("Location") or path))
    client_api.request("DELETE", f"/api/webhook-endpoints/{endpoint}/")
