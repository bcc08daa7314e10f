"""Every operation of the spec documents the outages' 503 (core/errors.py OUTAGES: the database
out of reach, a full disk) with the one error schema and `Retry-After`, and what a real outage
answers is what each operation documents. A client generated from the spec, or a reader of
Redoc, meets the 503 among the operation's answers, not only in the spec's introduction."""
from __future__ import annotations

import errno
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from core.errors import OUTAGES
from tests.conftest import Api
from tests.console.test_database_down import served_through_proxy

ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}


def api_operations(spec: dict) -> Iterator[tuple[str, str, dict]]:
    """(method, path, operation) of each API operation: not the health checks, which touch no
    database (/healthz) or answer its outage with a 503 of their own (/readyz, `not_ready`)."""
    for path, item in spec["paths"].items():
        if path.startswith("/api/"):
            for method, operation in item.items():
                yield method, path, operation


def validator(spec: dict, schema: dict) -> Draft202012Validator:
    """Validates against `schema`, whose `$ref`s point into the spec."""
    registry = Registry().with_resource("urn:spec", Resource.from_contents(spec, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": "urn:spec" + schema["$ref"]}, registry=registry)


def test_every_operation_documents_the_outages_503_with_the_error_schema_and_retry_after(
    committed_spec: dict,
) -> None:
    operations = list(api_operations(committed_spec))
    assert len(operations) >= 26  # the table in openapi/operations, the starter's two included
    for method, path, operation in operations:
        where = f"{method.upper()} {path}"
        answer = operation["responses"].get("503")
        assert answer is not None, where
        content = answer["content"]["application/json"]
        assert content["schema"] == ERROR_SCHEMA, where
        assert answer["headers"]["Retry-After"]["schema"] == {"type": "integer"}, where
        examples = [example["value"] for example in content["examples"].values()]
        for down in OUTAGES:
            assert f"`{down.code}`" in answer["description"], (where, down.code)
            assert {"error": {"code": down.code, "message": down.message, "details": None}} in examples, where


def ask_every_operation(api: Api, spec: dict) -> list[tuple[str, dict, requests.Response]]:
    """Each API operation asked once with `api`'s key, its path and required query parameters
    made up (the outage answers before any is looked at), a body `{}` where it takes one."""
    answers = []
    for method, path, operation in api_operations(spec):
        url = api.base_url + path
        query = {}
        for parameter in operation.get("parameters", []):
            # A value of the parameter's type, or the URL would not reach the view (a 404).
            value = "1" if parameter["schema"].get("type") == "integer" else str(uuid.uuid4())
            if parameter["in"] == "path":
                url = url.replace("{" + parameter["name"] + "}", value)
            elif parameter["in"] == "query" and parameter.get("required"):
                query[parameter["name"]] = value
        body = {"json": {}} if "requestBody" in operation else {}
        response = requests.request(method, url, params=query, headers=api.headers(), timeout=30, **body)
        answers.append((f"{method.upper()} {path}", operation, response))
    return answers


def assert_documented(spec: dict, answers: list[tuple[str, dict, requests.Response]], code: str) -> None:
    """Each answer is the outage's 503, its body valid against the operation's documented 503
    schema and its Retry-After what the documented header says it is."""
    for where, operation, response in answers:
        assert response.status_code == 503, (where, response.status_code, response.text)
        documented = operation["responses"]["503"]
        body = response.json()
        errors = list(validator(spec, documented["content"]["application/json"]["schema"]).iter_errors(body))
        assert errors == [], (where, [e.message for e in errors])
        assert body["error"]["code"] == code, where
        retry_after = response.headers["Retry-After"]
        header_schema = documented["headers"]["Retry-After"]["schema"]
        assert retry_after.isdigit() and Draft202012Validator(header_schema).is_valid(int(retry_after)), where


def test_with_the_database_down_every_operation_answers_its_documented_503(
    make_api: Callable[..., Api], committed_spec: dict, tmp_path: Path
) -> None:
    # Given the service as production runs it, with its database behind a proxy
    with served_through_proxy(make_api(), tmp_path / "gunicorn.log") as (api, proxy):
        # When PostgreSQL goes away and every operation is asked
        proxy.cut()
        answers = ask_every_operation(api, committed_spec)

    # Then each answers the 503 its operation documents
    assert_documented(committed_spec, answers, "database_unavailable")


def test_with_the_disk_full_every_operation_answers_its_documented_503(
    make_api: Callable[..., Api], committed_spec: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the first write of every request refused for a full disk, as embedded mode's file
    # cache meets it (tests/deploy/test_disk_full.py fills a real one, as root)
    def refused(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("core.auth._api_key_lookup", refused)

    # When every operation is asked
    answers = ask_every_operation(make_api(), committed_spec)

    # Then each answers the 503 its operation documents
    assert_documented(committed_spec, answers, "storage_full")
