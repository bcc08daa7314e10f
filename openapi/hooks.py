"""Post-processing of the generated spec: what drf-spectacular cannot express from the views.

- the long description (openapi/description.md, with the table of error codes),
- the health checks (plain Django views, which drf-spectacular does not discover),
- response headers (`Location`, `Retry-After`, `WWW-Authenticate`, `Preference-Applied`, `Vary`,
  the rate limit's `RateLimit-Policy` and `RateLimit`),
- the event streams' `text/event-stream` answers,
- links from a submission to the operations that take the new job's id,
- the Standard Webhooks signature headers on every webhook,
- the answers before any view on every operation: gunicorn's to a request it cannot parse, the
  URL guard's 400s (openapi/before_views.py).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from core.error_codes import error_codes_markdown
from openapi.before_views import ERROR_REF, with_answers_before_views
from openapi.operations.streams import PREFERENCE_APPLIED, STREAM_EXAMPLE, VARY_PREFER

DESCRIPTION_FILE = Path(__file__).resolve().parent / "description.md"
# Where the description has the table of error codes, rendered from their one list.
ERROR_CODES_PLACE = "<!-- error codes: core/error_codes.py -->"


def _health_operation(
    operation_id: str, summary: str, description: str, ok_example: dict[str, Any], ready: bool
) -> dict[str, Any]:
    ok_schema: dict[str, Any] = {
        "type": "object",
        "properties": {"status": {"type": "string", "const": "ok"}},
        "required": ["status"],
    }
    if ready:
        ok_schema["properties"]["checks"] = {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Each dependency checked, and `ok`.",
        }
    responses: dict[str, Any] = {
        "200": {
            "description": "OK.",
            "content": {"application/json": {"schema": ok_schema, "example": ok_example}},
        }
    }
    if ready:
        responses["503"] = {
            "description": "A dependency is unreachable; `details.failed` names which "
            "(`database`, `broker`; in embedded mode, `storage`: the data directory cannot be "
            "written). Code: `not_ready`.",
            "content": {
                "application/json": {
                    "schema": ERROR_REF,
                    "example": {
                        "error": {
                            "code": "not_ready",
                            "message": "Unreachable: broker.",
                            "details": {"failed": ["broker"]},
                        }
                    },
                }
            },
        }
    return {
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "tags": ["Health"],
        "security": [],
        "responses": responses,
    }


HEALTH_PATHS = {
    "/healthz": {
        "get": _health_operation(
            "check_liveness",
            "Liveness check",
            "The process is up and serving requests. Unauthenticated.",
            {"status": "ok"},
            ready=False,
        )
    },
    "/readyz": {
        "get": _health_operation(
            "check_readiness",
            "Readiness check",
            "The database and the broker are reachable. Unauthenticated; 503 names what is not.",
            {"status": "ok", "checks": {"database": "ok", "broker": "ok"}},
            ready=True,
        )
    },
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}
_HEADERS = {
    "401": {
        "WWW-Authenticate": {
            "description": "The scheme to use: `Bearer`.",
            "schema": {"type": "string"},
        }
    },
    "429": _RETRY_AFTER,
    "503": _RETRY_AFTER,
}

# The rate limit's fields (core/throttling.py), described once and referred to from each answer
# of an API operation that carries them: every answer to a request whose key was accepted.
RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": {
        "description": "The rate limit this request counted in (IETF draft-ietf-httpapi-ratelimit-headers): "
        "its scope (`submit`, `read`, `write`, `sensitive`), the requests (`q`) allowed in a window of `w` "
        "seconds, your client's own where the operator set one. A batch counts each of its jobs. Absent "
        "where the scope has no limit, and on answers given before the request was counted "
        "(`too_many_failed_authentications`, `invalid_query`, `invalid_path`, the 404 to an id not of its "
        "type, a batch whose body cannot be parsed, the server's `bad_request`).",
        "schema": {"type": "string"},
        "example": '"read";q=6000;w=60',
    },
    "RateLimit": {
        "description": "The scope's budget left: `r` requests would fit now (an estimate: an API process "
        "decides far from the limit on counts other processes share every `API_RATE_SYNC_SECONDS`), and "
        "one more after `t` seconds (the window slides: up to two windows). On a 429 `rate_limited`, `r` is "
        "less than the request needed (0 for a single request, `t` then its `Retry-After`; for a batch, the jobs "
        "that still fit), and `t` never later than its `Retry-After`.",
        "schema": {"type": "string"},
        "example": '"read";r=5999;t=60',
    },
}
_RATE_LIMIT_REFS = {name: {"$ref": f"#/components/headers/{name}"} for name in RATE_LIMIT_HEADERS}
# Answered before the key is checked: no key (401) or the body's limits (408, 413).
_BEFORE_THE_RATE_LIMIT = frozenset({"401", "408", "413"})


_LOCATION = {
    "Location": {
        "description": "Where to poll the job: `/api/jobs/{job_id}/`.",
        "schema": {"type": "string"},
    }
}

_ENDPOINT_LOCATION = {
    "Location": {
        "description": "The new endpoint: `/api/webhook-endpoints/{endpoint_id}/`.",
        "schema": {"type": "string"},
    }
}

_STREAMS = ("stream_job_events", "stream_events")
_STREAM_HEADERS = {
    "X-Accel-Buffering": {
        "description": "`no`: proxies (nginx) pass each message on at once.",
        "schema": {"type": "string", "const": "no"},
    },
    "Cache-Control": {"description": "`no-cache`.", "schema": {"type": "string"}},
}

# operationId -> {response status -> links}
_LINKS: dict[str, dict[str, dict[str, Any]]] = {
    "submit_job": {
        "202": {
            "GetJob": {
                "operationId": "get_job",
                "parameters": {"job_id": "$response.body#/id"},
                "description": "Poll the new job.",
            },
            "CancelJob": {
                "operationId": "cancel_job",
                "parameters": {"job_id": "$response.body#/id"},
                "description": "Cancel the new job.",
            },
        }
    },
    "legacy_submit_job": {
        "202": {
            "GetJobStatus": {
                "operationId": "legacy_get_job_status",
                "parameters": {"job_id": "$response.body#/task_id"},
                "description": "Poll the new job.",
            }
        }
    },
}

# The Standard Webhooks headers (https://www.standardwebhooks.com), on every webhook request.
SIGNATURE_HEADERS = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "Unique id of the event; the same on every retry and redelivery of it, "
        "so receivers deduplicate on it.",
        "schema": {"type": "string"},
        "example": "msg_2b5e0e6d2f6a4c1e9a7d3f7b8c9d0e1f",
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "Unix time (seconds) of this attempt. Reject events whose timestamp is "
        "more than a few minutes from your clock, against replays.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "example": "1795874410",
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": "Space-separated `v1,<signature>` entries, each the base64 of "
        "HMAC-SHA256 over `<webhook-id>.<webhook-timestamp>.<raw body bytes>`, keyed with the "
        "base64-decoded part of your `whsec_...` secret (`GET /api/webhook-secret/`). Accept "
        "the event when any entry matches (two are sent for a while after a rotation). "
        "The `standardwebhooks` libraries do this check.",
        "schema": {"type": "string"},
        "example": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
    },
]


def _any_json(node: Any) -> None:
    """drf-spectacular writes a nullable JSONField as `oneOf: [{}, {type: null}]`, which no null
    can match (it is valid for both branches): any JSON, null included, is plainly `{}`."""
    if isinstance(node, dict):
        if node.get("oneOf") == [{}, {"type": "null"}]:
            del node["oneOf"]
        for value in node.values():
            _any_json(value)
    elif isinstance(node, list):
        for value in node:
            _any_json(value)


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOKS entry point."""
    description = DESCRIPTION_FILE.read_text().strip()
    result["info"]["description"] = description.replace(ERROR_CODES_PLACE, error_codes_markdown())
    schemas = result["components"]["schemas"]
    _any_json(schemas)
    # One named enum each, rather than an inline copy that generators turn into another class.
    schemas["JobEvent"]["properties"]["type"] = {
        "$ref": "#/components/schemas/WebhookEventType",
        "description": "The event name.",
    }
    for path_item in result["paths"].values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            for status, headers in _HEADERS.items():
                if status in responses:
                    responses[status].setdefault("headers", {}).update(headers)
            if "requestBody" in operation:
                # Every body this API takes is required; drf-spectacular cannot tell for the
                # submission's oneOf.
                operation["requestBody"]["required"] = True
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "status" and parameter["in"] == "query":
                    parameter["schema"] = {"$ref": "#/components/schemas/JobStatus"}
            if operation.get("operationId") == "submit_job":
                responses["202"].setdefault("headers", {}).update({**_LOCATION, **PREFERENCE_APPLIED})
            if operation.get("operationId") == "get_job":
                responses["200"].setdefault("headers", {}).update({**PREFERENCE_APPLIED, **VARY_PREFER})
            if operation.get("operationId") == "create_webhook_endpoint":
                responses["201"].setdefault("headers", {}).update(_ENDPOINT_LOCATION)
            if operation.get("operationId") in _STREAMS:
                # Its errors are JSON whatever the client accepts (jobs.stream_api), and DRF's
                # `?format=` override is not offered.
                operation["parameters"] = [p for p in operation["parameters"] if p["name"] != "format"]
                for response in responses.values():
                    response.get("content", {}).pop("text/event-stream", None)
                responses["200"]["content"] = {"text/event-stream": {
                    "schema": {"type": "string", "description": "SSE messages; each `data:` is a `JobEvent`."},
                    "example": STREAM_EXAMPLE,
                }}
                responses["200"]["headers"] = _STREAM_HEADERS
            for status, links in _LINKS.get(operation.get("operationId", ""), {}).items():
                responses[status]["links"] = links
            if operation.get("security"):  # after the streams' headers, which replace the 200's
                for status, response in responses.items():
                    if status not in _BEFORE_THE_RATE_LIMIT:
                        response["headers"] = {**response.get("headers", {}), **_RATE_LIMIT_REFS}
    result["components"]["headers"] = RATE_LIMIT_HEADERS
    # After the operations' headers: /readyz's 503 (`not_ready`) sends no Retry-After. A copy: the
    # server's answers are merged into each operation's below, and a process makes the spec once
    # per format; merged into HEALTH_PATHS itself, each making would repeat the server's answers.
    result["paths"].update(copy.deepcopy(HEALTH_PATHS))
    for path, path_item in result["paths"].items():
        for operation in path_item.values():
            operation["responses"] = with_answers_before_views(operation["responses"], path_takes_ids="{" in path)
    for path_item in result.get("webhooks", {}).values():
        for operation in path_item.values():
            operation["parameters"] = SIGNATURE_HEADERS
    return result
