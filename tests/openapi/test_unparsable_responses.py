"""Every operation of the spec, the health checks too, documents the server's answers to a request
it cannot parse (gunicorn_worker.py's PARSE_ERRORS: 400 `bad_request`, 414, 417, 431, 501) with the
one error schema, and what gunicorn answers on each operation's path is what it documents; where
the operation documents a 400 of its own, that one is kept. Before, no operation listed the 414 and
the 431, then none the 417 and the 501, and the 400 only where a view answers one: a client
generated from the spec met those bodies unknown.

The URL guard's 400 `invalid_query` (core/middleware.py), answered on every path before any view,
is documented the same way: before, only the lists and a few operations named it, none as an
example, and an operation without a 400 of its own (the health checks) not at all; then none had an
example of its refusal of more than 1,000 parameters, nor any operation whose path takes an id its
400 `invalid_path` to `%00` there."""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.conftest import Api, serving
from tests.openapi.test_outage_responses import ERROR_SCHEMA, validator
from tests.test_gunicorn_worker import send_raw

# Each status, its code, and a request of that kind on `path`.
UNPARSABLE = {
    "400": ("bad_request",
            lambda method, path: b"%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: two\r\n\r\n" % (method, path)),
    "414": ("request_line_too_long",
            lambda method, path: b"%s %s?q=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % (method, path, b"a" * 10_000)),
    "431": ("request_headers_too_large",
            lambda method, path: b"%s %s HTTP/1.1\r\nHost: localhost\r\nX-Big: %s\r\n\r\n" % (method, path, b"a" * 10_000)),
    "417": ("expectation_failed",
            lambda method, path: b"%s %s HTTP/1.1\r\nHost: localhost\r\nExpect: a-miracle\r\n\r\n" % (method, path)),
    "501": ("unsupported_transfer_coding",
            lambda method, path: b"%s %s HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: br\r\n\r\n" % (method, path)),
}


def every_operation(spec: dict) -> Iterator[tuple[str, str, dict]]:
    """(method, path, operation) of each operation of the spec, the health checks included."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_every_operation_documents_the_servers_unparsable_answers_with_the_error_schema(committed_spec: dict) -> None:
    operations = list(every_operation(committed_spec))
    assert len(operations) >= 28  # the API's operations and the two health checks
    for method, path, operation in operations:
        for status, (code, _) in UNPARSABLE.items():
            where = f"{method.upper()} {path} {status}"
            answer = operation["responses"].get(status)
            assert answer is not None, where
            content = answer["content"]["application/json"]
            assert content["schema"] == ERROR_SCHEMA, where
            codes = [example["value"]["error"]["code"] for example in content["examples"].values()]
            assert codes[-1] == code, where
            assert answer["description"].endswith(f"Code: `{code}`."), where
            if codes == [code]:
                # Answered before any view: no rate limit counted it
                assert "headers" not in answer, where


def test_a_views_own_400_is_kept_beside_the_servers(committed_spec: dict) -> None:
    # Given an operation whose view answers 400s of its own
    answer = committed_spec["paths"]["/api/jobs/"]["post"]["responses"]["400"]
    examples = answer["content"]["application/json"]["examples"]
    # Then its own examples, description and headers are there, the server's example after them
    assert list(examples) == ["InvalidPayload", "UnknownJobName", "InvalidQuery", "TooManyQueryParameters", "BadRequest"]
    assert answer["description"].startswith("The request is invalid; nothing was created.")
    assert set(answer["headers"]) == {"RateLimit-Policy", "RateLimit"}


def test_each_unparsable_request_on_every_operation_answers_its_documented_body(
    make_api: Callable[..., Api], committed_spec: dict, tmp_path: Path
) -> None:
    # Given the API as production runs it
    answers = []
    with serving(make_api(), tmp_path / "gunicorn.log") as (api, _):
        # When each operation's path is sent each kind of request gunicorn cannot parse
        for method, path, operation in every_operation(committed_spec):
            for status, (_, request) in UNPARSABLE.items():
                sent = request(method.upper().encode(), path.replace("{", "").replace("}", "").encode())
                answers.append((f"{method.upper()} {path}", status, operation, *send_raw(api, sent)))

    # Then each answer is its status, its body valid against the operation's documented schema and
    # the very example the spec shows
    for where, status, operation, answer, body in answers:
        assert str(answer.status) == status, (where, answer.status, body)
        assert answer.getheader("Content-Type") == "application/json", (where, body)
        content = operation["responses"][status]["content"]["application/json"]
        parsed = json.loads(body)
        errors = list(validator(committed_spec, content["schema"]).iter_errors(parsed))
        assert errors == [], (where, [error.message for error in errors])
        assert parsed in [example["value"] for example in content["examples"].values()], (where, parsed)


def test_each_query_string_and_path_the_url_guard_refuses_answers_a_documented_400_on_every_operation(
    make_api: Callable[..., Api], committed_spec: dict
) -> None:
    # Given a client with a key, against the real database
    api = make_api()
    too_many = "&".join(f"a{n}=1" for n in range(1001))  # Django's DATA_UPLOAD_MAX_NUMBER_FIELDS is 1000
    answers = []
    # When each operation's path (its ids filled in) is sent with `%00` in its query string, with
    # more parameters than the guard takes, and, where the path takes an id, with `%00` for the id
    for method, template, operation in every_operation(committed_spec):
        path = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), template)
        sent = [f"{path}?a=%00", f"{path}?{too_many}"]
        if "{" in template:
            sent.append(re.sub(r"\{[^}]+\}", "%00", template))
        answers.append((f"{method.upper()} {template}", operation,
                        [api.request(method.upper(), url) for url in sent]))

    # Then each answers 400 `invalid_query` or `invalid_path`, its body one of the examples its
    # operation's 400 shows, its code named in that 400's description, and each of the guard's
    # examples there an answer it gave
    for where, operation, given in answers:
        documented = operation["responses"]["400"]
        examples = [example["value"] for example in documented["content"]["application/json"]["examples"].values()]
        for answer in given:
            assert answer.status_code == 400, (where, answer.text)
            assert answer.json()["error"]["code"] in {"invalid_query", "invalid_path"}, (where, answer.text)
            assert answer.json() in examples, (where, answer.text)
            assert f"`{answer.json()['error']['code']}`" in documented["description"], (where, answer.text)
        guards = [example for example in examples if example["error"]["code"] in {"invalid_query", "invalid_path"}]
        assert guards == [answer.json() for answer in given], where


def test_an_id_not_of_its_type_answers_a_documented_404_on_every_operation_that_takes_one(
    make_api: Callable[..., Api], committed_spec: dict
) -> None:
    # Given a client with a key, and each operation whose path takes an id
    api = make_api()
    answers = []
    for method, template, operation in every_operation(committed_spec):
        if "{" in template:
            # When its id is not one: not a UUID (nor a whole number), or bytes that are not UTF-8
            sent = [re.sub(r"\{[^}]+\}", bad, template) for bad in ("not-an-id", "%FF")]
            answers.append((f"{method.upper()} {template}", operation,
                            [api.request(method.upper(), url) for url in sent]))

    # Then each answers 404 `not_found`, its body one of the examples its operation's 404 shows
    assert len(answers) >= 13, answers
    for where, operation, given in answers:
        documented = operation["responses"]["404"]
        examples = [example["value"] for example in documented["content"]["application/json"]["examples"].values()]
        for answer in given:
            assert answer.status_code == 404, (where, answer.text)
            assert answer.json() in examples, (where, answer.text)


def test_the_answers_before_any_view_carry_no_rate_limit_as_its_description_says(
    make_api: Callable[..., Api], committed_spec: dict
) -> None:
    # Given a client with a key, and what the spec says of the rate limit's fields
    api = make_api()
    described = committed_spec["components"]["headers"]["RateLimit-Policy"]["description"]

    # When it sends what the URL guard refuses, and an id no route takes
    answers = {named: api.get(url) for url, named in [
        ("/api/jobs/?a=%00", "`invalid_query`"), ("/api/jobs/%00/", "`invalid_path`"),
        ("/api/jobs/not-an-id/", "the 404 to an id not of its type"),
    ]}

    # Then none carries the fields, and the spec names each where it says they are absent
    for named, answer in answers.items():
        assert answer.status_code in {400, 404}, (named, answer.text)
        assert not {"RateLimit-Policy", "RateLimit"} & set(answer.headers), (named, answer.headers)
        assert named in described.split("Absent", 1)[1], named
