"""The committed spec (openapi/schema.yaml) is exactly what the code generates, and is served."""
from __future__ import annotations

import difflib
from pathlib import Path

import requests
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator

from tests.openapi.conftest import SCHEMA_FILE


def test_committed_spec_matches_the_code(tmp_path: Path) -> None:
    generated = tmp_path / "schema.yaml"

    # The same command as `make schema`, warnings fatal (counting only this run's warnings).
    GENERATOR_STATS.reset()
    call_command("spectacular", "--file", str(generated), "--validate", "--fail-on-warn")

    expected, actual = SCHEMA_FILE.read_text(), generated.read_text()
    if expected != actual:
        diff = "".join(
            list(
                difflib.unified_diff(
                    expected.splitlines(keepends=True),
                    actual.splitlines(keepends=True),
                    "openapi/schema.yaml (committed)",
                    "generated from the code",
                )
            )[:80]
        )
        raise AssertionError(f"The committed spec is stale: run `make schema`.\n{diff}")


def test_the_spec_made_again_in_one_process_is_the_same() -> None:
    # An API process makes it once per format (openapi/views.py): the YAML and the JSON are two
    # makings, and each must be the one document.
    first = SchemaGenerator().get_schema(request=None, public=True)
    again = SchemaGenerator().get_schema(request=None, public=True)

    assert again == first


def test_spec_is_openapi_31_with_webhooks_and_bearer_auth(committed_spec: dict) -> None:
    assert committed_spec["openapi"] == "3.1.0"
    assert set(committed_spec["webhooks"]) == {
        "job.started", "job.progress", "job.succeeded", "job.failed", "job.canceled", "webhook.test",
        "endpoint.disabled",
    }
    for webhook in committed_spec["webhooks"].values():
        headers = {p["name"] for p in webhook["post"]["parameters"] if p["in"] == "header"}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert committed_spec["components"]["securitySchemes"]["ApiKey"] == {
        **committed_spec["components"]["securitySchemes"]["ApiKey"],
        "type": "http",
        "scheme": "bearer",
    }


def test_every_operation_is_named_summarised_and_errors_use_the_one_schema(
    committed_spec: dict,
) -> None:
    operation_ids = []
    for path, item in committed_spec["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            operation_ids.append(operation["operationId"])
            assert operation.get("summary") and operation.get("description"), where
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (where, status)
                    assert response["content"]["application/json"].get("examples") or response[
                        "content"
                    ]["application/json"].get("example"), (where, status)
            if operation.get("security") != []:
                assert "401" in operation["responses"], where
    assert len(operation_ids) == len(set(operation_ids))


def test_the_served_spec_is_the_committed_one(docs_server: str, committed_spec: dict) -> None:
    response = requests.get(f"{docs_server}/api/schema/", params={"format": "json"}, timeout=30)

    assert response.status_code == 200
    assert response.json() == committed_spec
