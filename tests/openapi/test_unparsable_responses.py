"""Every operation of the spec, the health checks too, documents the server's 414
(`request_line_too_long`) and 431 (`request_headers_too_large`) with the one error schema, and
what gunicorn answers (gunicorn_worker.py) on each operation's path is what it documents.
Before, no operation listed them: a client generated from the spec met those bodies unknown."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.conftest import Api, serving
from tests.openapi.test_outage_responses import ERROR_SCHEMA, validator
from tests.test_gunicorn_worker import send_raw

# Each status, its code, and a request of that kind on `path` (a 10 KB query string or header).
UNPARSABLE = {
    "414": ("request_line_too_long",
            lambda method, path: b"%s %s?q=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % (method, path, b"a" * 10_000)),
    "431": ("request_headers_too_large",
            lambda method, path: b"%s %s HTTP/1.1\r\nHost: localhost\r\nX-Big: %s\r\n\r\n" % (method, path, b"a" * 10_000)),
}


def every_operation(spec: dict) -> Iterator[tuple[str, str, dict]]:
    """(method, path, operation) of each operation of the spec, the health checks included."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_every_operation_documents_the_servers_414_and_431_with_the_error_schema(committed_spec: dict) -> None:
    operations = list(every_operation(committed_spec))
    assert len(operations) >= 28  # the API's operations and the two health checks
    for method, path, operation in operations:
        for status, (code, _) in UNPARSABLE.items():
            where = f"{method.upper()} {path} {status}"
            answer = operation["responses"].get(status)
            assert answer is not None, where
            content = answer["content"]["application/json"]
            assert content["schema"] == ERROR_SCHEMA, where
            assert [example["value"]["error"]["code"] for example in content["examples"].values()] == [code], where
            assert f"`{code}`" in answer["description"], where
            # Answered before any view: no rate limit counted it
            assert "headers" not in answer, where


def test_a_too_long_request_line_or_header_on_every_operation_answers_its_documented_body(
    make_api: Callable[..., Api], committed_spec: dict, tmp_path: Path
) -> None:
    # Given the API as production runs it
    answers = []
    with serving(make_api(), tmp_path / "gunicorn.log") as (api, _):
        # When each operation's path is sent a 10 KB request line, then a 10 KB header
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
