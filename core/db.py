"""Database helpers shared by the apps."""
from __future__ import annotations

from django.db.models import QuerySet


def delete_in_batches(queryset: QuerySet, *, batch_size: int, max_batches: int) -> int:
    """Delete what `queryset` matches, `batch_size` rows at a time, at most `max_batches` times;
    returns how many rows of its model went. Small batches never lock a big slice of a table;
    each batch re-applies the queryset's filter, so a row that stopped matching is kept."""
    label = queryset.model._meta.label
    deleted = 0
    for _ in range(max_batches):
        ids = list(queryset.values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        _total, per_model = queryset.filter(pk__in=ids).delete()
        deleted += per_model.get(label, 0)
    return deleted
