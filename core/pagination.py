"""The one list envelope: `{"results": [...], "next": <url|null>, "previous": <url|null>}`, with
its cursor and `page_size` read strictly: a cursor this list did not issue, or a page size that
is not a whole number, is a 400 (`invalid_cursor`, `invalid_parameter`), never a 500; both at
once, one 400 naming both (`parameters_refused`)."""
from __future__ import annotations

import binascii
import re
from base64 import b64decode, b64encode
from datetime import UTC
from typing import Any
from urllib import parse

from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

from core.errors import ApplicationError
from core.timestamps import timestamp_parse

_DIGITS = re.compile(r"[0-9]+")
# What DRF's cursor holds (offset, reverse, position) and the ordering it was made for.
_CURSOR_TOKENS = frozenset({"o", "r", "p", "s"})


def _invalid_cursor(why: str) -> ApplicationError:
    return ApplicationError(
        f"Invalid cursor: {why}. Take cursors from `next` or `previous` as they are, or start "
        "again without one.",
        code="invalid_cursor",
        details={"cursor": [why]},
    )


def _position(value: str) -> str:
    """A cursor's position as the list writes it (`str` of a UTC datetime), or a 400."""
    moment = timestamp_parse(value)
    if moment is None:
        raise _invalid_cursor("its position is not a date and time")
    if moment.tzinfo is None:
        raise _invalid_cursor("its position has no UTC offset")
    try:
        return str(moment.astimezone(UTC))
    except OverflowError:
        raise _invalid_cursor("its position is out of range") from None


def parameters_refused(errors: list[ApplicationError]) -> ApplicationError:
    """The one 400 for a list's refused `page_size` and `cursor` (`parameter_errors`): a lone one as
    it is; both, `invalid_parameter` with both messages and each named in `details`, where the
    client mended its page size and was then told of its cursor."""
    if len(errors) == 1:
        return errors[0]
    return ApplicationError(
        " ".join(error.message for error in errors),
        code="invalid_parameter",
        details={name: why for error in errors for name, why in error.details.items()},
    )


class NewestFirstCursorPagination(CursorPagination):
    """Cursor pages stay fast at millions of rows (no OFFSET) and stable while rows are added.

    DRF's own reading of a cursor lets a well-formed one with any position through to the
    query (a 500 when it is not a date), and answers a garbled one 404: here each part is
    checked, and the cursor names the ordering it was made for.
    """

    ordering = ("-created_at", "-pk")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request: Request) -> int:
        value = request.query_params.get(self.page_size_query_param, "")
        if value == "":
            return self.page_size
        try:
            size = int(value) if _DIGITS.fullmatch(value) else 0
        except ValueError:  # more digits than Python converts
            size = 0
        if size < 1:
            raise ApplicationError(
                f"page_size must be a whole number from 1 (at most {self.max_page_size} are "
                "returned).",
                code="invalid_parameter",
                details={"page_size": ["Expected a whole number of at least 1."]},
            )
        return min(size, self.max_page_size)

    def parameter_errors(self, request: Request) -> list[ApplicationError]:
        """The 400s the query's `page_size` and `cursor` each answer (in that order), none when both
        are fine: read with the list's filters (core.filters.query_filtered), before any query."""
        errors: list[ApplicationError] = []
        for read in (self.get_page_size, self.decode_cursor):
            try:
                read(request)
            except ApplicationError as error:
                errors.append(error)
        return errors

    def decode_cursor(self, request: Request) -> Cursor | None:
        encoded = request.query_params.get(self.cursor_query_param, "")
        if encoded == "":
            return None
        try:
            text = b64decode(encoded.encode("ascii"), validate=True).decode("ascii")
            tokens = parse.parse_qs(text, keep_blank_values=True, strict_parsing=True)
        except (ValueError, binascii.Error):
            raise _invalid_cursor("it is not a cursor of this service") from None
        if set(tokens) - _CURSOR_TOKENS or any(len(values) != 1 for values in tokens.values()):
            raise _invalid_cursor("it is not a cursor of this service")
        token = {name: values[0] for name, values in tokens.items()}
        if token.get("s") != ",".join(self.ordering):
            raise _invalid_cursor("it was made for another list or ordering")
        offset, reverse = token.get("o", "0"), token.get("r", "0")
        if not _DIGITS.fullmatch(offset) or len(offset) > 9 or reverse not in ("0", "1"):
            raise _invalid_cursor("its offset or direction is malformed")
        position = token.get("p")
        return Cursor(
            # Offsets past the cutoff are clamped as DRF does (its own cursors can carry them).
            offset=min(int(offset), self.offset_cutoff),
            reverse=reverse == "1",
            position=None if position is None else _position(position),
        )

    def encode_cursor(self, cursor: Cursor) -> str:
        tokens: dict[str, Any] = {"s": ",".join(self.ordering)}
        if cursor.offset != 0:
            tokens["o"] = str(cursor.offset)
        if cursor.reverse:
            tokens["r"] = "1"
        if cursor.position is not None:
            tokens["p"] = cursor.position
        encoded = b64encode(parse.urlencode(tokens).encode("ascii")).decode("ascii")
        return replace_query_param(self.base_url, self.cursor_query_param, encoded)
