"""Every API operation, asked in the states a client meets, answers as the committed spec says.

The fuzz run (test_fuzz.py) sends what it can generate to a service it knows nothing of; most of
what a client lives with it never reaches: a job of each status, the cancel of a final job, a
replayed and a reused `Idempotency-Key`, a spent rate limit, a waited read, a redelivery, an
endpoint's whole life, a finished stream's `204`. Each answer here has a status its operation
lists, that status's content type, a body valid against its schema, every header the status
documents (but `Preference-Applied`, sent only when the wait was honoured, and the RateLimit fields,
only once the request was counted), and no header a client
acts on that the status leaves out.
"""
from __future__ import annotations

import uuid
from base64 import b64encode
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from django.test import override_settings
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from core.error_codes import ERROR_CODES
from examples.receiver import Receiver
from tests.conftest import Api
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.jobs.test_checklist import guidelines_for
from tests.openapi.test_outage_responses import api_operations

# Headers a client acts on: each must be documented on the answer that carries it.
ACTED_ON = ("Location", "Retry-After", "Preference-Applied", "WWW-Authenticate", "RateLimit-Policy", "RateLimit")
# Documented, and sent only when it applies: a wait the server had room for; the rate limit's
# budget, on the answers to requests it counted (not a query string the URL guard refused, nor a
# batch whose body could not be parsed to count its jobs).
SOMETIMES = frozenset({"Preference-Applied", "RateLimit-Policy", "RateLimit"})
HELLO = "api.tasks.hello_world"
LONG = "api.tasks.long_running_task"
SAVE = "api.tasks.save_task_result_test_task"
CHECKLIST = "api.tasks.generate_checklist_from_guidelines"
# Past API_MAX_BODY_BYTES (1 MiB).
TOO_LARGE = b"[" + b"1," * 600_000 + b"1]"


class Conformance:
    """Asks operations of the spec and keeps what in their answers the spec does not say."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.registry = Registry().with_resource(
            "urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012)
        )
        self.asked: set[tuple[str, str]] = set()
        self.problems: list[str] = []

    def ask(self, api: Api, method: str, template: str, expect: int, path: str | None = None,
            **kwargs: Any) -> requests.Response:
        """`method` on `path` (the operation's `template` when not given); the answer is `expect`."""
        response = api.request(method.upper(), path or template, **kwargs)
        assert response.status_code == expect, (method, path or template, response.status_code, response.text)
        self.asked.add((method, template))
        where = f"{method.upper()} {template} -> {response.status_code}"
        self.problems += [f"{where}: {problem}" for problem in self._undocumented(method, template, response)]
        return response

    def _undocumented(self, method: str, template: str, response: requests.Response) -> list[str]:
        documented = self.spec["paths"][template][method]["responses"].get(str(response.status_code))
        if documented is None:
            return ["status not documented"]
        problems = []
        headers = documented.get("headers", {})
        problems += [f"{name} sent, not documented" for name in ACTED_ON
                     if name in response.headers and name not in headers]
        problems += [f"{name} documented, not sent" for name in headers
                     if name not in response.headers and name not in SOMETIMES]
        content = documented.get("content")
        if not content:
            return problems + (["a body where none is documented"] if response.content else [])
        media_type = response.headers.get("Content-Type", "").split(";")[0]
        if media_type not in content:
            return [*problems, f"content type {media_type!r}, documented {list(content)}"]
        if media_type == "application/json":
            validator = Draft202012Validator(self._resolvable(content[media_type]["schema"]), registry=self.registry)
            problems += [f"{list(error.absolute_path)}: {error.message[:300]}"
                         for error in validator.iter_errors(response.json())]
            if response.status_code >= 400:
                problems += self._code_unnamed(documented, response.json())
                problems += self._retry_after_disagrees(response)
        return problems

    @staticmethod
    def _retry_after_disagrees(response: requests.Response) -> list[str]:
        """A wait said twice, in `Retry-After` and in `details.retry_after_seconds`, said alike."""
        details = response.json()["error"]["details"]
        said = details.get("retry_after_seconds") if isinstance(details, dict) else None
        if said is None or str(said) == response.headers.get("Retry-After"):
            return []
        return [f"Retry-After {response.headers.get('Retry-After')}, details.retry_after_seconds {said}"]

    @staticmethod
    def _code_unnamed(documented: dict, body: Any) -> list[str]:
        """An error whose code the answer's documentation names nowhere (its text, its examples)."""
        error = body["error"]
        examples = documented["content"]["application/json"].get("examples", {}).values()
        named = f"`{error['code']}`" in documented["description"] or any(
            example["value"]["error"]["code"] == error["code"] for example in examples
        )
        return [] if named else [f"code {error['code']} not named"]

    @staticmethod
    def _resolvable(schema: dict) -> dict:
        return {"$ref": "urn:spec" + schema["$ref"]} if "$ref" in schema else schema


def _jobs_of_every_status(api: Api, fake_openai: FakeOpenAI) -> dict[str, str]:
    """Job ids by status: one of each a client can read. Checklist jobs whose model answers are
    malformed fail (FAILURE), or wait a minute for their second run (RETRY)."""
    failing, retrying = fake_openai.scenario(), fake_openai.scenario()
    failing.add(Reply.answer("not JSON"))
    retrying.add(Reply.answer("not JSON"))
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    jobs = {
        "PENDING": api.submit(HELLO, {"message": "later"}, run_at=later)["id"],
        "STARTED": api.submit(LONG, {"duration": 30, "message": "m"})["id"],
        "SUCCESS": api.submit(SAVE, {"k": "v"})["id"],
        "FAILURE": api.submit(CHECKLIST, {"guidelines": guidelines_for(failing)},
                              retry={"max_attempts": 1, "backoff_seconds": 1})["id"],
        "REVOKED": api.submit(LONG, {"duration": 30, "message": "m"})["id"],
        "RETRY": api.submit(CHECKLIST, {"guidelines": guidelines_for(retrying)},
                            retry={"max_attempts": 2, "backoff_seconds": 60})["id"],
    }
    api.wait(jobs["REVOKED"], until=lambda job: job["status"] == "STARTED")
    api.post(f"/api/jobs/{jobs['REVOKED']}/cancel/")
    for status, job_id in jobs.items():
        api.wait(job_id, until=lambda job, status=status: job["status"] == status)
    return jobs


def _ask_the_job_operations(c: Conformance, api: Api, jobs: dict[str, str]) -> None:
    hello = {"job_name": HELLO, "payload": {"message": "x"}}
    c.ask(api, "post", "/api/jobs/", 202, json=hello, headers={"Prefer": "wait=5"})
    c.ask(api, "post", "/api/jobs/", 400, json={"job_name": "no.such.type"})
    c.ask(api, "post", "/api/jobs/", 400, data="{", headers={"Content-Type": "application/json"})
    c.ask(api, "post", "/api/jobs/", 415, data="x", headers={"Content-Type": "text/plain"})
    c.ask(api, "post", "/api/jobs/", 400, json={"job_name": LONG, "payload": {"duration": "long"}})
    c.ask(api, "post", "/api/jobs/", 400, json=hello, headers={"Cancel-After": "soon"})
    c.ask(api, "post", "/api/jobs/", 400, json=hello, headers={"Idempotency-Key": "k" * 256})
    c.ask(api, "post", "/api/jobs/", 400, json={**hello, "callback_url": "http://10.0.0.1/"})
    c.ask(api, "post", "/api/jobs/", 400, data="[" * 2000, headers={"Content-Type": "application/json"})
    c.ask(api, "post", "/api/jobs/", 413, data=TOO_LARGE, headers={"Content-Type": "application/json"})
    key = {"Idempotency-Key": uuid.uuid4().hex}
    c.ask(api, "post", "/api/jobs/", 202, json=hello, headers=key)
    c.ask(api, "post", "/api/jobs/", 202, json=hello, headers=key)  # the replay
    c.ask(api, "post", "/api/jobs/", 422, json={**hello, "payload": {"message": "y"}}, headers=key)
    with override_settings(API_SUBMIT_RATE_PER_MINUTE=1):
        api.post("/api/jobs/", json=hello)
        c.ask(api, "post", "/api/jobs/", 429, json=hello)
    with override_settings(JOB_MAX_UNFINISHED_PER_CLIENT=1):
        c.ask(api, "post", "/api/jobs/", 429, json=hello)
        c.ask(api, "post", "/api/job/", 429, json=hello)
    with override_settings(API_READ_RATE_PER_MINUTE=1):
        api.get("/api/limits/")
        c.ask(api, "get", "/api/limits/", 429)

    for status, job_id in jobs.items():
        c.ask(api, "get", "/api/jobs/{job_id}/", 200, f"/api/jobs/{job_id}/")
        c.ask(api, "get", "/api/jobs/", 200, params={"status": status})
    c.ask(api, "get", "/api/jobs/{job_id}/", 200, f"/api/jobs/{jobs['STARTED']}/", headers={"Prefer": "wait=1"})
    c.ask(api, "get", "/api/jobs/{job_id}/", 404, f"/api/jobs/{uuid.uuid4()}/")
    page = c.ask(api, "get", "/api/jobs/", 200, params={"page_size": 2}, headers={"Prefer": "wait=1"}).json()
    c.ask(api, "get", "/api/jobs/", 200, page["next"].removeprefix(api.base_url))
    c.ask(api, "get", "/api/jobs/", 400, params={"status": "DONE"})
    c.ask(api, "get", "/api/jobs/", 400, params={"cursor": "not-one"})
    c.ask(api, "get", "/api/jobs/", 400, params={"page_size": 0})
    c.ask(api, "get", "/api/jobs/", 400, "/api/jobs/?job_name=%00")
    c.ask(api, "get", "/api/jobs/", 400, params={"created_after": "yesterday"})
    c.ask(api, "get", "/api/jobs/", 401, headers={"Authorization": "Bearer not-a-key"})
    c.ask(api, "get", "/api/results/", 400, params={"cursor": "not-one"})

    c.ask(api, "post", "/api/jobs/{job_id}/cancel/", 202, f"/api/jobs/{jobs['PENDING']}/cancel/")
    c.ask(api, "post", "/api/jobs/{job_id}/cancel/", 409, f"/api/jobs/{jobs['SUCCESS']}/cancel/")
    c.ask(api, "post", "/api/jobs/{job_id}/cancel/", 404, f"/api/jobs/{uuid.uuid4()}/cancel/")

    batch = {"jobs": [hello, hello]}
    c.ask(api, "post", "/api/jobs/batch/", 202, json=batch, headers={"Prefer": "wait=1"})
    c.ask(api, "post", "/api/jobs/batch/", 400, json={"jobs": []})
    c.ask(api, "post", "/api/jobs/batch/", 400, json={"jobs": [hello] * 1001})
    c.ask(api, "post", "/api/jobs/batch/", 400, json={"jobs": [hello, {"job_name": "no.such.type"}]})
    c.ask(api, "post", "/api/jobs/batch/", 415, data="x", headers={"Content-Type": "text/plain"})
    c.ask(api, "get", "/api/job-types/", 200)
    c.ask(api, "get", "/api/limits/", 200)

    result_id = c.ask(api, "get", "/api/results/", 200).json()["results"][0]["id"]
    c.ask(api, "get", "/api/results/{result_id}/", 200, f"/api/results/{result_id}/")
    c.ask(api, "get", "/api/results/{result_id}/", 404, "/api/results/999999999/")

    c.ask(api, "post", "/api/job/", 202, json=hello, headers={"Prefer": "wait=1"})
    c.ask(api, "post", "/api/job/", 400, json={"job_name": 5})
    c.ask(api, "get", "/api/job/", 200, params={"job_id": jobs["FAILURE"]})
    c.ask(api, "get", "/api/job/", 400)
    c.ask(api, "get", "/api/job/", 404, params={"job_id": str(uuid.uuid4())})


def _ask_the_webhook_operations(c: Conformance, api: Api, receiver: Receiver, jobs: dict[str, str]) -> None:
    sent = api.post("/api/jobs/", json={"job_name": HELLO, "payload": {"message": "x"}, "callback_url": receiver.url},
                    headers={"Prefer": "wait=10"}).json()
    receiver.wait_for(1)
    job = f"/api/jobs/{sent['id']}"
    api.wait(sent["id"], until=lambda _: api.get(f"{job}/deliveries/").json()["results"][0]["state"] != "pending")
    c.ask(api, "get", "/api/jobs/{job_id}/deliveries/", 200, f"{job}/deliveries/")
    c.ask(api, "post", "/api/jobs/{job_id}/redeliver/", 202, f"{job}/redeliver/")
    c.ask(api, "post", "/api/jobs/{job_id}/redeliver/", 409, f"/api/jobs/{jobs['SUCCESS']}/redeliver/")
    c.ask(api, "get", "/api/deliveries/", 200, params={"job": sent["id"]})
    c.ask(api, "get", "/api/deliveries/", 400, params={"state": "lost"})

    c.ask(api, "get", "/api/webhook-secret/", 200)
    c.ask(api, "post", "/api/webhook-secret/rotate/", 200)
    c.ask(api, "post", "/api/webhook-secret/rotate/", 400, json={"expire_previous_now": "soon"})
    c.ask(api, "post", "/api/webhook-secret/rotate/", 415, data="x", headers={"Content-Type": "text/plain"})
    c.ask(api, "post", "/api/webhook-secret/rotate/", 413, data=TOO_LARGE, headers={"Content-Type": "application/json"})

    created = c.ask(api, "post", "/api/webhook-endpoints/", 201, json={"url": receiver.url})
    endpoint = created.headers["Location"]
    one = "/api/webhook-endpoints/{endpoint_id}/"
    c.ask(api, "post", "/api/webhook-endpoints/", 400, json={"url": "ftp://example.com/"})
    with override_settings(WEBHOOK_MAX_ENDPOINTS_PER_CLIENT=1):
        c.ask(api, "post", "/api/webhook-endpoints/", 409, json={"url": receiver.url})
    c.ask(api, "get", "/api/webhook-endpoints/", 200)
    c.ask(api, "get", one, 200, endpoint)
    c.ask(api, "patch", one, 200, endpoint, json={"enabled": False})
    c.ask(api, "patch", one, 400, endpoint, json={"url": "not a url"})
    since = {"since": "2026-01-01T00:00:00Z"}
    c.ask(api, "post", one + "recover/", 202, endpoint + "recover/", json=since)
    c.ask(api, "post", one + "recover/", 400, endpoint + "recover/", json={})
    c.ask(api, "post", one + "recover/", 415, endpoint + "recover/", data="x", headers={"Content-Type": "text/plain"})
    c.ask(api, "get", one + "secret/", 200, endpoint + "secret/")
    c.ask(api, "post", one + "secret/rotate/", 200, endpoint + "secret/rotate/")
    c.ask(api, "post", one + "secret/rotate/", 413, endpoint + "secret/rotate/", data=TOO_LARGE,
          headers={"Content-Type": "application/json"})
    c.ask(api, "post", one + "test/", 202, endpoint + "test/")
    c.ask(api, "delete", one, 204, endpoint)
    c.ask(api, "get", one, 404, endpoint)


def _ask_the_streams(c: Conformance, api: Api, jobs: dict[str, str]) -> None:
    final = f"/api/jobs/{jobs['SUCCESS']}/events/"
    sse = {"Accept": "text/event-stream"}
    last_id = c.ask(api, "get", "/api/jobs/{job_id}/events/", 200, final, headers=sse).text.split("id: ")[1].split("\n")[0]
    c.ask(api, "get", "/api/jobs/{job_id}/events/", 204, final, headers={**sse, "Last-Event-ID": last_id})
    c.ask(api, "get", "/api/jobs/{job_id}/events/", 404, f"/api/jobs/{uuid.uuid4()}/events/", headers=sse)
    with override_settings(API_MAX_WAITERS_PER_PROCESS=0):
        c.ask(api, "get", "/api/jobs/{job_id}/events/", 503, f"/api/jobs/{jobs['STARTED']}/events/", headers=sse)
        c.ask(api, "get", "/api/events/", 503, headers=sse)
    with override_settings(API_MAX_WAITERS_PER_CLIENT=0):
        c.ask(api, "get", "/api/events/", 429, headers=sse)
    with api.get("/api/events/", headers=sse, stream=True) as stream:
        c.ask(api, "get", "/api/events/", 401, headers={**sse, "Authorization": "Bearer not-a-key"})
        assert stream.status_code == 200
        c.asked.add(("get", "/api/events/"))
        c.problems += [f"GET /api/events/ -> 200: {problem}"
                       for problem in c._undocumented("get", "/api/events/", stream)]


def test_every_operation_answers_as_documented_in_the_states_clients_meet(
    api: Api, committed_spec: dict, fake_openai: FakeOpenAI
) -> None:
    # Given a job of every status, and a receiver for webhooks
    conformance = Conformance(committed_spec)
    jobs = _jobs_of_every_status(api, fake_openai)

    # When every operation is asked, in each state its answer can take
    with Receiver() as receiver:
        _ask_the_job_operations(conformance, api, jobs)
        _ask_the_webhook_operations(conformance, api, receiver, jobs)
    _ask_the_streams(conformance, api, jobs)

    for unfinished in ("STARTED", "RETRY"):
        api.post(f"/api/jobs/{jobs[unfinished]}/cancel/")

    # Then each answer is one its operation documents, and none was left out
    assert conformance.problems == [], "\n".join(conformance.problems)
    documented = {(method, path) for method, path, _ in api_operations(committed_spec)}
    assert documented - conformance.asked == set()


def test_a_jobs_error_is_documented_for_each_status_that_shows_one(
    api: Api, committed_spec: dict, fake_openai: FakeOpenAI
) -> None:
    # Given a job waiting to retry after a failed run, and one its deadline canceled
    scenario = fake_openai.scenario()
    scenario.add(Reply.answer("not JSON"))
    retrying = api.submit(CHECKLIST, {"guidelines": guidelines_for(scenario)},
                          retry={"max_attempts": 2, "backoff_seconds": 60})
    late = api.post("/api/jobs/", json={"job_name": LONG, "payload": {"duration": 30, "message": "m"}},
                    headers={"Cancel-After": "1"}).json()

    # When they are read
    shown = [api.wait(retrying["id"], until=lambda job: job["status"] == "RETRY"), api.wait(late["id"])]
    api.post(f"/api/jobs/{retrying['id']}/cancel/")

    # Then each shows an error, and the spec's `error` says when a job has one
    described = committed_spec["components"]["schemas"]["Job"]["properties"]["error"]["description"]
    for job in shown:
        assert job["error"] is not None, job
        assert f"`{job['status']}`" in described, (job["status"], described)
    assert "`deadline_exceeded`" in described


def test_every_operation_that_takes_a_body_documents_what_its_body_can_meet(committed_spec: dict) -> None:
    # The body's limits (core.request_body, the parsers) answer before any view: a slow body 408,
    # a large one 413, one not JSON 415, whichever operation it was sent to.
    for method, path, operation in api_operations(committed_spec):
        if "requestBody" in operation:
            assert {"408", "413", "415"} <= set(operation["responses"]), f"{method.upper()} {path}"


def test_each_documented_400_example_is_an_answer_its_operation_gives(
    make_api: Callable[..., Api], committed_spec: dict
) -> None:
    # Given an endpoint, and the requests that can get each operation's own 400s
    api = make_api()
    json_body = {"Content-Type": "application/json"}
    bad_bodies = [{"json": {"expire_previous_now": "soon"}}, {"json": {}}, {"json": {"since": "yesterday"}},
                  {"json": [1]}, {"data": "{", "headers": json_body}, {"data": "[" * 2000, "headers": json_body},
                  {"data": '{"since": "\\u0000"}', "headers": json_body}]
    # a cursor of the lists' ordering whose position is not a date, as the lists' example has it
    cursor = b64encode(b"s=-created_at%2C-pk&p=x").decode()
    too_many = "?" + "&".join(f"x{n}=1" for n in range(1001))
    bad_queries = [f"?cursor={cursor}", "?page_size=0", "?x=%00", too_many, "?page_size=1&page_size=2"]
    with Receiver() as receiver:
        endpoint = api.post("/api/webhook-endpoints/", json={"url": receiver.url}).headers["Location"]
        job = api.submit(HELLO)["id"]
        asked = {
            ("get", "/api/job/"): [("/api/job/", {}), ("/api/job/?job_id=", {}), ("/api/job/?job_id=%00", {}),
                                   ("/api/job/" + too_many, {})],
            # the lists without a filter
            ("get", "/api/webhook-endpoints/"): [("/api/webhook-endpoints/" + query, {}) for query in bad_queries],
            ("get", "/api/jobs/{job_id}/deliveries/"): [(f"/api/jobs/{job}/deliveries/" + query, {})
                                                        for query in bad_queries] + [("/api/jobs/%00/deliveries/", {})],
            **{("post", template): [(path, body) for body in bad_bodies] + [(path + "?x=%00", {}), (path + too_many, {})]
               + ([(template.replace("{endpoint_id}", "%00"), {})] if "{" in template else [])
               for template, path in [("/api/webhook-secret/rotate/", "/api/webhook-secret/rotate/"),
                                      ("/api/webhook-endpoints/{endpoint_id}/secret/rotate/", endpoint + "secret/rotate/"),
                                      ("/api/webhook-endpoints/{endpoint_id}/recover/", endpoint + "recover/")]},
        }

        # When each is sent
        answers = {operation: [api.request(operation[0].upper(), path, **kwargs) for path, kwargs in requests]
                   for operation, requests in asked.items()}

    # Then every example of each operation's 400 (but the server's own, answered before the API)
    # is an answer it gave, and the codes its 400 names are the codes its answers had: none it
    # never answers (the submission's, as they listed), none left out
    for (method, template), responses in answers.items():
        documented = committed_spec["paths"][template][method]["responses"]["400"]
        given = [response.json() for response in responses if response.status_code == 400]
        examples = documented["content"]["application/json"]["examples"].values()
        for example in examples:
            if example["value"]["error"]["code"] != "bad_request":
                assert example["value"] in given, (method, template, example["value"], given)
        named = {code for code in ERROR_CODES if f"`{code}`" in documented["description"]}
        assert named == {answer["error"]["code"] for answer in given} | {"bad_request"}, (method, template, given)


def test_a_body_that_is_not_an_object_gets_the_same_answer_from_each_webhooks_operation(
    make_api: Callable[..., Api],
) -> None:
    # Given an endpoint, and the operations whose 400 says a body that is not a JSON object is `invalid`
    api = make_api()
    with Receiver() as receiver:
        endpoint = api.post("/api/webhook-endpoints/", json={"url": receiver.url}).headers["Location"]
        paths = ["/api/webhook-secret/rotate/", endpoint + "secret/rotate/", endpoint + "recover/",
                 "/api/webhook-endpoints/"]

        # When each is sent a JSON array
        answers = {path: api.post(path, json=[1]) for path in paths}

    # Then each answers 400 `invalid` naming what the body was, where a rotation said "No data provided"
    for path, answer in answers.items():
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json()["error"]["code"] == "invalid", (path, answer.text)
        assert answer.json()["error"]["details"] == {
            "non_field_errors": ["Invalid data. Expected a dictionary, but got list."]
        }, (path, answer.text)
