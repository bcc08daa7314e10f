"""The strict JSON parser: whatever it accepts, PostgreSQL stores and gives back unchanged;
whatever PostgreSQL cannot store, it refuses with a 400 (`invalid_json`)."""
from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import ApplicationError
from core.parsers import storable_text, strict_json_loads, unstorable_character
from core.services import client_create
from jobs.models import Job

# Any JSON value, its strings drawn from every code point: U+0000 and lone surrogates included.
ANY_TEXT = st.text(
    st.characters(exclude_categories=()) | st.sampled_from(["\x00", "\ud800", "\udfff", "\U0001f600"]),
    max_size=8,
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | ANY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4),
    max_leaves=20,
)


def _unstorable(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    return False


def _numbers_as_floats(value: Any) -> Any:
    # jsonb keeps numbers as decimals: 6.5e+16 comes back as the integer 65000000000000000.
    if isinstance(value, dict):
        return {k: _numbers_as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_floats(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


@pytest.mark.django_db(transaction=False)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON_VALUES, ascii_only=st.booleans())
def test_what_the_parser_accepts_postgresql_stores_unchanged(value: Any, ascii_only: bool) -> None:
    # ensure_ascii writes every non-ASCII character as \u escapes (surrogate pairs included),
    # as Python clients do by default; without it only U+0000-like controls are escaped.
    text = json.dumps({"payload": value}, ensure_ascii=ascii_only)
    raw = text.encode("utf-8", errors="surrogatepass")

    try:
        parsed = strict_json_loads(raw)
    except ApplicationError as exc:
        assert _unstorable(value)
        assert exc.code in ("invalid_json", "malformed_json")  # malformed: raw surrogate bytes
        return

    assert not _unstorable(value)
    with transaction.atomic():
        job = Job.objects.create(owner=client_create(name="p"), job_name="x", payload=parsed)
        stored = Job.objects.get(pk=job.pk).payload
        assert _numbers_as_floats(stored) == _numbers_as_floats({"payload": value})
        transaction.set_rollback(True)


@pytest.mark.parametrize(
    ("text", "character"),
    [
        ('{"a": "\\u0000"}', "U+0000"),
        ('{"\\u0000": 1}', "U+0000"),
        ('[[[["\\ud800"]]]]', "U+D800"),
        ('{"a": {"b\\uDBFF": 0}}', "U+DBFF"),
        ('["\\udc00x"]', "U+DC00"),
        ('"\\ude00\\ud83d"', "U+DE00"),
    ],
)
def test_unstorable_characters_are_named(text: str, character: str) -> None:
    with pytest.raises(ApplicationError) as raised:
        strict_json_loads(text.encode())

    assert raised.value.code == "invalid_json"
    assert raised.value.details == {"character": character}


def test_the_walk_looks_at_keys_and_values_at_any_depth_without_recursion() -> None:
    deep: Any = "\ud800"
    for _ in range(100_000):
        deep = [deep]

    assert unstorable_character(deep) == "U+D800"
    assert unstorable_character({"a": [{"b": {"\x00": 1}}]}) == "U+0000"
    assert unstorable_character({"ok": ["\U0001f600", "é", 1, None, 2.5]}) is None


@given(ANY_TEXT)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_storable_text_replaces_only_what_postgresql_refuses(text: str) -> None:
    stored = storable_text(text)

    assert unstorable_character(stored) is None
    assert len(stored) == len(text)
    assert all(kept == given_ or kept == "\ufffd" for kept, given_ in zip(stored, text, strict=True))


def test_storable_text_keeps_a_character_written_as_a_surrogate_pair() -> None:
    assert storable_text(json.loads('"a\\u0000b\\udc00\\ud83d\\ude00"')) == "a\ufffdb\ufffd\U0001f600"
