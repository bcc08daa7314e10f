"""Reading a cursor: whatever a client sends is a cursor the list issued or a 400
(`invalid_cursor`), and every cursor the list issues reads back as it was."""
from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlencode, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.pagination import Cursor
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from core.errors import ApplicationError
from core.pagination import NewestFirstCursorPagination

FACTORY = APIRequestFactory()
ORDERING = ",".join(NewestFirstCursorPagination.ordering)


def _decode(value: str) -> Cursor | None:
    paginator = NewestFirstCursorPagination()
    return paginator.decode_cursor(Request(FACTORY.get("/api/jobs/", {"cursor": value})))


def _refused(value: str) -> bool:
    try:
        _decode(value)
    except ApplicationError as exc:
        assert exc.code == "invalid_cursor" and exc.status_code == 400
        return True
    return False


TOKENS = st.dictionaries(
    st.sampled_from(["o", "r", "p", "s", "x"]),
    st.text(max_size=40) | st.sampled_from([ORDERING, "1", "0", "2026-01-01 00:00:00+00:00"]),
)


@settings(max_examples=500, deadline=None)
@given(
    value=st.text(max_size=60)
    | st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())
    | TOKENS.map(lambda t: base64.b64encode(urlencode(t).encode()).decode())
)
def test_any_text_is_a_cursor_or_a_400(value: str) -> None:
    cursor = None if _refused(value) else _decode(value)

    if cursor is not None:
        assert 0 <= cursor.offset <= NewestFirstCursorPagination.offset_cutoff
        assert cursor.position is None or datetime.fromisoformat(cursor.position).tzinfo is not None


@settings(max_examples=300, deadline=None)
@given(
    position=st.none() | st.datetimes(timezones=st.just(UTC)),
    offset=st.integers(0, 5000),
    reverse=st.booleans(),
    shift=st.integers(-23 * 60, 23 * 60),
)
def test_a_cursor_the_list_issued_reads_back(
    position: datetime | None, offset: int, reverse: bool, shift: int
) -> None:
    paginator = NewestFirstCursorPagination()
    paginator.base_url = "http://testserver/api/jobs/?page_size=3"
    written = None if position is None else str(position)

    url = paginator.encode_cursor(Cursor(offset=offset, reverse=reverse, position=written))
    value = parse_qs(urlsplit(url).query)["cursor"][0]

    assert _decode(value) == Cursor(
        offset=min(offset, paginator.offset_cutoff), reverse=reverse, position=written
    )
    # The same instant written in another UTC offset reads as the list writes it.
    if position is not None and datetime.min.replace(tzinfo=UTC) + timedelta(days=1) < position < (
        datetime.max.replace(tzinfo=UTC) - timedelta(days=1)
    ):
        moved = str(position.astimezone(timezone(timedelta(minutes=shift))))
        other = base64.b64encode(urlencode({"s": ORDERING, "p": moved}).encode()).decode()
        assert _decode(other).position == written
