"""List filters every app's lists share."""
from __future__ import annotations

from datetime import UTC, datetime

import django_filters
from django import forms
from django.forms.utils import from_current_timezone

from core.timestamps import timestamp_parse


class UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """A date-time read as the API's bodies read one (core.timestamps.timestamp_parse): Django's
    own reader took an offset no clock shows, such as +01:60, for another (+02:00). ISO 8601
    allows UTC offsets PostgreSQL refuses (beyond +-15:59, a 500 when queried): compare in UTC,
    and refuse times that fall outside the representable years."""

    def to_python(self, value: object) -> datetime | None:
        if value in self.empty_values:
            return None
        parsed = timestamp_parse(str(value).strip())
        if parsed is None:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        try:
            return from_current_timezone(parsed).astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("Date and time out of range.", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField
