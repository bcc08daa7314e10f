"""Which view has which schema: one table, view by dotted path, then HTTP method.

What drf-spectacular cannot infer from a plain APIView: operationIds chosen for generated method
names, summaries, every answer with its examples (errors in the one error shape). Each entry
becomes a view extension in `openapi.extensions`. The entries live beside their views' app.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openapi.operations import endpoints, jobs, streams, webhooks

# dotted path of the view -> {HTTP method -> its schema}
OPERATIONS: dict[str, dict[str, Callable[..., Any]]] = {
    **jobs.OPERATIONS, **streams.OPERATIONS, **webhooks.OPERATIONS, **endpoints.OPERATIONS,
}
