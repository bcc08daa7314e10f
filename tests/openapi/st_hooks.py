"""Schemathesis hooks for the fuzz run (loaded through SCHEMATHESIS_HOOKS).

The event streams are left out: `GET /api/events/` never ends on its own and a job's stream
lasts as long as the job, which a request-and-response fuzzer cannot read (tests/jobs/
test_streams.py proves them). `Prefer: wait` stays in, its waits cut to API_MAX_WAIT_SECONDS=2 on
the fuzz server.

Callback URLs are resolved at submission (the SSRF guard), so a fuzzed host name would be a DNS
query off this machine: every callback URL the run sends points at a closed loopback port
instead, which the fuzz server allows (WEBHOOK_ALLOWED_NETWORKS=127.0.0.0/8).
"""
from __future__ import annotations

from typing import Any

import schemathesis

LOOPBACK_RECEIVER = "http://127.0.0.1:9/hook"
STREAM_PATHS = ("/api/events/", "/api/jobs/{job_id}/events/")


def _local_urls(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _local_urls(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_local_urls(value) for value in node]
    if isinstance(node, str) and node.startswith("https://example.com/"):
        return LOOPBACK_RECEIVER
    return node


@schemathesis.hook
def before_load_schema(ctx: Any, raw_schema: dict[str, Any]) -> None:
    # The spec's examples use example.com, for readers; the run must not resolve it.
    raw_schema.update(_local_urls(raw_schema))
    for path in STREAM_PATHS:
        raw_schema["paths"].pop(path, None)


@schemathesis.hook
def map_body(ctx: Any, body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("callback_url"), str) and body["callback_url"]:
        body["callback_url"] = LOOPBACK_RECEIVER
    return body
