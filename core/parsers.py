"""A strict JSON parser for request bodies: UTF-8 only, no NaN/Infinity, no duplicate keys,
bounded size and nesting depth. Each violation is a clear 400 (or 413), never a 500."""
from __future__ import annotations

import json
from typing import Any, NoReturn

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import BaseParser

from core.errors import ApplicationError


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {duplicate!r}")
    return obj


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), computed without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
        else:
            continue
        deepest = max(deepest, depth + 1)
    return deepest


def contains_nul(value: Any) -> bool:
    """Whether any string (key or value) holds U+0000, computed without recursion."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def strict_json_loads(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApplicationError("The body is not valid UTF-8.", code="malformed_json") from exc
    try:
        data = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys
        )
    except RecursionError as exc:
        raise ApplicationError("The JSON is nested too deeply.", code="json_too_deep") from exc
    except ValueError as exc:
        raise ApplicationError(f"Malformed JSON: {exc}.", code="malformed_json") from exc
    if json_depth(data) > settings.API_MAX_JSON_DEPTH:
        raise ApplicationError(
            f"The JSON is nested deeper than {settings.API_MAX_JSON_DEPTH} levels.",
            code="json_too_deep",
        )
    # PostgreSQL's jsonb cannot store U+0000 (a 500 when the job is saved); only an escape can
    # put one in a string, so the walk runs only when the text has one.
    if "\\u0000" in text and contains_nul(data):
        raise ApplicationError(
            "The JSON contains the character U+0000, which is not accepted.", code="invalid_json"
        )
    return data


class StrictJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = settings.API_MAX_BODY_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise ApplicationError(
                f"The request body is larger than {limit} bytes.",
                code="payload_too_large",
                status_code=413,
            )
        if not raw.strip():
            raise exceptions.ParseError("The request body is empty; send a JSON object.")
        return strict_json_loads(raw)
