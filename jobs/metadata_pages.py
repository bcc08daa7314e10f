"""A page of the job list filtered by metadata, read so that what it costs is bounded by the page's
size whatever share of the client's jobs carry the labels (docs/reliability.md, "The metadata
filter's page")."""
from __future__ import annotations

import math
from typing import Any

from django.db import connection, transaction
from django.db.models import Q, QuerySet

from core.models import Client
from jobs import sql
from jobs.models import Job
from jobs.selectors import jobs_with_metadata

# How many of the list's rows, newest first, a page's first read looks at: this many times the
# rows it asks for (the cursor's offset, the page, and the one more that says there is a next).
WINDOW_PAGES = 4
# The most rows a second look walks, when the first found some matches but not a page: the
# rows it expects to need (twice what the first's share of matches says) up to this many.
WIDER_WINDOW_MAX_ROWS = 5_000


class MetadataPage:
    """The owner's jobs (`jobs`: the list with its other filters) whose metadata holds `metadata`,
    as the list's cursor pagination reads them (DRF's CursorPagination, pinned: it orders them,
    filters them to its cursor's position, and takes a slice).

    The slice is read in two steps. First among the list's W newest rows only (W is
    WINDOW_PAGES times the slice's end): where the W-th lies, read off an owner-first index's
    entries in order, then the page among the rows up to it, the labels tested on each row read,
    never through their index. A filter most of the client's jobs match fills the page there,
    reading about a page of rows. When some of those rows match but not a page's worth, the same
    look is taken again among as many rows as their share says the page needs, twice over, if
    that is at most WIDER_WINDOW_MAX_ROWS: a label on 1 in 30 of the client's jobs fills a
    default page there, where the GIN index read all of them (20,000 of a client's 600,000 jobs,
    180 ms, against 6 ms). Otherwise (none matched, or too few) the page is read through the
    labels' GIN index (`job_owner_metadata`), which then reads the client's matching jobs: a
    label rare among its newest, or a filter beside it (`status`) that few of them pass, where
    a wider walk would read rows by the thousand for nothing.

    Left to itself, PostgreSQL chose between the two by its estimate of the matching rows, which
    it cannot make for one client's labels: the owner is a subquery, planned for any client
    (about the table's rows over its number of clients), and the labels are indexed under the
    owner's id. For a label all of a client's 50,000 jobs carry, among 200 other clients', it
    expected about 250, and read all 50,000 through the GIN index and sorted them for a page of
    500 (165-220 ms). For the same reason the looks are planned as index walks only
    (jobs.sql.index_walks_only): otherwise it read all of the client's rows for its W newest."""

    def __init__(self, jobs: QuerySet[Job], metadata: dict[str, str], *, owner: Client) -> None:
        self.jobs, self.metadata, self.owner = jobs, metadata, owner

    def order_by(self, *fields: str) -> MetadataPage:
        return MetadataPage(self.jobs.order_by(*fields), self.metadata, owner=self.owner)

    def filter(self, *args: Any, **kwargs: Any) -> MetadataPage:
        return MetadataPage(self.jobs.filter(*args, **kwargs), self.metadata, owner=self.owner)

    def __getitem__(self, rows: slice) -> list[Job]:
        start, stop = rows.start or 0, rows.stop
        # The paginator's ordering: `-created_at` first (newest first), or `created_at` for a
        # previous page.
        first = self.jobs.query.order_by[0]
        window = WINDOW_PAGES * stop
        with transaction.atomic(), sql.index_walks_only():
            page, found = self._among_newest(first, window, start, stop)
            if page is None and found:
                # Some matched, not a page: looked at among the rows they say it needs, twice
                # over, when that is few enough (a label on 1 in 30 of a client's 600,000 jobs
                # read its 20,000 through the GIN index, 180 ms, for a default page).
                wider = math.ceil(2 * window * (stop - start) / found)
                if wider <= WIDER_WINDOW_MAX_ROWS:
                    page, _ = self._among_newest(first, wider, start, stop)
        if page is not None:
            return page
        return list(jobs_with_metadata(self.jobs, self.metadata, owner=self.owner)[start:stop])

    def _among_newest(self, first: str, window: int, start: int, stop: int) -> tuple[list[Job] | None, int]:
        """The page read among the list's `window` newest rows (its oldest, for a previous page),
        None where they do not hold it; and how many of them matched."""
        edge = self.jobs.order_by(first).values_list("created_at", flat=True)[window - 1:window].first()
        within = Q(metadata__contains=self.metadata)
        if edge is not None:
            within &= Q(created_at__lte=edge) if first == "created_at" else Q(created_at__gte=edge)
        page = list(self.jobs.filter(within)[start:stop])
        # Every row up to the edge was looked at: the page is the list's, and with fewer than
        # `window` rows left there is no edge and it read all of them.
        return (page if edge is None or len(page) == stop - start else None), len(page)


def job_list_with_metadata(
    jobs: QuerySet[Job], metadata: dict[str, str], *, owner: Client
) -> QuerySet[Job] | MetadataPage:
    """The job list `jobs` filtered by `metadata`, for the list's pagination: on PostgreSQL read
    as MetadataPage says; elsewhere (SQLite, embedded mode) key by key, as jobs_with_metadata."""
    if not metadata or connection.vendor != "postgresql":
        return jobs_with_metadata(jobs, metadata, owner=owner)
    return MetadataPage(jobs, metadata, owner=owner)
