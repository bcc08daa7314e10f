"""A strict JSON parser for request bodies: UTF-8 only, no NaN/Infinity, no duplicate keys,
bounded size and nesting depth, nothing PostgreSQL cannot store. Each violation is a clear 400
(or 413), never a 500."""
from __future__ import annotations

import json
import re
from decimal import Decimal
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


# A number json.dumps writes with an exponent (1e+308, 1.5e-05). Strings may match too: that
# only costs json_numbers_growth its walk.
_EXPONENT = re.compile(r"[0-9]e[+-]")


def json_numbers_growth(value: Any, text: str, *, stop_over: int) -> int:
    """How many bytes more than `text` (`value`'s json.dumps) its numbers take as jsonb gives
    them back: PostgreSQL's numeric writes them out without an exponent, so 1e308 (5 bytes in
    a body) is 309 digits in every read of it, and every event and webhook that carries it.
    Walks the value, without recursion, only when `text` has a number with an exponent, and
    stops once the growth is over `stop_over` (about 1.3 µs a number it looks at)."""
    if not _EXPONENT.search(text):
        return 0
    growth, stack = 0, [value]
    while stack and growth <= stop_over:
        node = stack.pop()
        if type(node) is float:
            written = repr(node)  # as json.dumps wrote it
            if "e" in written:
                growth += len(format(Decimal(written), "f")) - len(written)
        elif type(node) is dict:
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
    return growth


# U+0000 and lone surrogates (U+D800 to U+DFFF), which PostgreSQL's text and jsonb refuse.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Neither can reach a parsed string but through a \u escape (strict UTF-8 decoding refuses both
# raw), so the walk below runs only when the text has one of these escapes (a valid surrogate
# pair, an escaped emoji, matches too; the walk then finds nothing).
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def unstorable_character(value: Any) -> str | None:
    """The first U+0000 or lone surrogate in any string (key or value), as "U+XXXX", or None;
    computed without recursion, in one pass."""
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is str:
            if "\x00" in node:
                return "U+0000"
            if not node.isascii() and (found := _SURROGATE.search(node)):
                return f"U+{ord(found.group()):04X}"
        elif type(node) is dict:
            stack.extend(node)
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
    return None


def storable_text(text: str) -> str:
    """`text` with each U+0000 and lone surrogate replaced by U+FFFD, so PostgreSQL can store it
    (text a job writes that came from elsewhere: an exception's, a provider's error message)."""
    if "\x00" not in text and (text.isascii() or not _SURROGATE.search(text)):
        return text
    return _SURROGATE.sub("\ufffd", text.replace("\x00", "\ufffd"))


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
    # Stored as is, either would be a 500 when the job (or its idempotency key) is saved.
    if _SUSPECT_ESCAPE.search(text) and (character := unstorable_character(data)):
        raise ApplicationError(
            f"The JSON contains the character {character}, which is not accepted "
            "(U+0000 and lone surrogates cannot be stored).",
            code="invalid_json",
            details={"character": character},
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
