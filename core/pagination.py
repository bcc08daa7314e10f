"""The one list envelope: `{"results": [...], "next": <url|null>, "previous": <url|null>}`."""
from rest_framework.pagination import CursorPagination


class NewestFirstCursorPagination(CursorPagination):
    """Cursor pages stay fast at millions of rows (no OFFSET) and stable while rows are added."""

    ordering = ("-created_at", "-pk")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
