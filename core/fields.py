"""Serializer fields every app's JSON inputs share."""
from __future__ import annotations

from typing import Any

from rest_framework import ISO_8601, serializers
from rest_framework.utils.humanize_datetime import datetime_formats

from core.timestamps import timestamp_parse


def _json_number(field: serializers.Field, data: Any) -> int | float:
    """`data` when it is a JSON number; the field's `invalid` error otherwise. DRF's number
    fields take what Python's int() and float() take: `true` (1), and strings such as "١٠" or
    "1_0" (10), so that a body's `true` or `"1_0"` was a rate of 1 a second or 10 attempts."""
    if isinstance(data, bool) or not isinstance(data, int | float):
        field.fail("invalid")
    return data


class JsonIntegerField(serializers.IntegerField):
    """A whole JSON number (2, or 2.0), never a boolean or a string."""

    def to_internal_value(self, data: Any) -> int:
        number = _json_number(self, data)
        if isinstance(number, float):
            if not number.is_integer():  # also refuses nan and the infinities
                self.fail("invalid")
            return int(number)
        return number


class JsonFloatField(serializers.FloatField):
    """A JSON number, never a boolean or a string."""

    def to_internal_value(self, data: Any) -> float:
        return super().to_internal_value(_json_number(self, data))


class TimestampField(serializers.DateTimeField):
    """A date-time, read by the one reader of the API's (core.timestamps.timestamp_parse): DRF's
    own took an offset no clock shows, such as +01:60, for another (+02:00)."""

    def to_internal_value(self, value: Any) -> Any:
        if not isinstance(value, str):
            return super().to_internal_value(value)  # refused as DRF refuses it (a number, a list)
        parsed = timestamp_parse(value)
        if parsed is None:
            self.fail("invalid", format=datetime_formats([ISO_8601]))
        return self.enforce_timezone(parsed)
