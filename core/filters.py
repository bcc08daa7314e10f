"""List filters every app's lists share."""
from __future__ import annotations

from datetime import UTC, datetime

import django_filters
from django import forms


class UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """ISO 8601 allows UTC offsets PostgreSQL refuses (beyond +-15:59, a 500 when queried):
    compare in UTC, and refuse times that fall outside the representable years."""

    def to_python(self, value: object) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("Date and time out of range.", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField
