"""The job list filtered by metadata: a page reads rows bounded by its size whatever share of the
client's jobs carry the labels, all of them or none, and its cursor pages hold every matching job
once, forward and back, as the list's other filters' do (jobs/metadata_pages.py)."""
from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import connection, transaction
from django.test import Client as DjangoClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import jobs.api
from core.models import Client
from core.services import api_key_create, client_create
from jobs.metadata_pages import WINDOW_PAGES
from jobs.models import Job
from jobs.selectors import jobs_with_metadata
from tests.conftest import Api, plan_rows_read
from tests.jobs.test_api_cursors import relative, walk

CLIENT_JOBS = 20_000
GOLD_EVERY = 100  # 1 % of them carry tier=gold too


def _labelled_jobs(owner: Client) -> None:
    """The owner's CLIENT_JOBS jobs a second apart, all labelled env=prod, one in GOLD_EVERY
    tier=gold too; and 200 other clients' 25 jobs each, with the same labels: PostgreSQL then
    plans the owner's list for a client of 201, and expects few of its jobs to match."""
    others = [str(client_create(name=f"other-{number}").pk) for number in range(200)]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO jobs_job (id, owner_id, job_name, payload, status, callback_url, webhook_events,
                                  cancel_requested, created_at, finished_at, metadata, attempt,
                                  max_attempts, retry_backoff_seconds, webhook_endpoints, request_id)
            SELECT gen_random_uuid(), owner_id, 'api.tasks.hello_world', '{"message": "hi"}', 'SUCCESS', '',
                   '[]', false, now() - g * interval '1 second', now(),
                   CASE WHEN owner_id = %(owner)s::uuid AND g %% %(gold)s = 0
                        THEN '{"env": "prod", "tier": "gold"}' ELSE '{"env": "prod"}' END::jsonb,
                   1, 1, 0, true, ''
            FROM (SELECT %(owner)s::uuid AS owner_id, g FROM generate_series(1, %(count)s) g
                  UNION ALL
                  SELECT other::uuid, g * 800 + n FROM unnest(%(others)s::text[]) WITH ORDINALITY AS o(other, n),
                                                        generate_series(1, 25) g) s
            ORDER BY g DESC
            """,
            {"owner": str(owner.pk), "gold": GOLD_EVERY, "count": CLIENT_JOBS, "others": others},
        )
        cursor.execute("ANALYZE jobs_job")


def _plans(statements: list[str]) -> list[str]:
    """The plans of `statements`' reads of jobs, run again in order under EXPLAIN (ANALYZE) in
    one transaction, with the settings the others made for them."""
    plans = []
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in statements:
            if statement.startswith("SELECT") and '"jobs_job"' in statement:
                cursor.execute(f"EXPLAIN (ANALYZE) {statement}")
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
            elif "set_config" in statement:
                cursor.execute(statement)
    return plans


@pytest.mark.django_db(transaction=True)
def test_a_metadata_page_reads_rows_bounded_by_its_size_whatever_share_of_the_jobs_match() -> None:
    # Given a client's 20,000 jobs all labelled env=prod, 1 % of them tier=gold, among 200 other
    # clients' (so PostgreSQL expects about 100 of its jobs to carry env=prod)
    owner = client_create(name="labelled")
    _labelled_jobs(owner)
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
    matching = {"env=prod": CLIENT_JOBS, "tier=gold": CLIENT_JOBS // GOLD_EVERY, "env=dev": 0}

    for label, count in matching.items():
        key, value = label.split("=")
        for size in (20, 100, 500):
            # When the client asks for a page of its jobs with that label
            with CaptureQueriesContext(connection) as queries:
                response = http.get("/api/jobs/", {f"metadata[{key}]": value, "page_size": size})
            # ...and its statements are run again as they were
            plans = _plans([query["sql"] for query in queries.captured_queries])

            # Then the page is the newest of the matching jobs
            assert response.status_code == 200, response.content[:300]
            page = response.json()["results"]
            assert len(page) == min(size, count), (label, size)
            assert all(job["metadata"][key] == value for job in page)
            # And it read a few pages' worth of rows (the newest WINDOW_PAGES pages' index
            # entries, and rows), plus the matching ones where those did not hold the page: not
            # every one of the client's 20,000 jobs for env=prod and page_size=500, read through
            # the GIN index and sorted
            window = WINDOW_PAGES * (size + 1)
            bound = 2 * window + (0 if label == "env=prod" else count)
            read = sum(plan_rows_read(plan, "jobs_job") for plan in plans)
            assert read <= bound, (label, size, read, "\n\n".join(plans))


def _jobs(api: Api, minutes: list[int], metadata: dict[str, str]) -> list[Job]:
    """Jobs labelled `metadata` created `minutes` ago each (equal minutes: equal timestamps)."""
    now = timezone.now()
    return Job.objects.bulk_create(
        Job(owner=api.client, job_name="api.tasks.hello_world", created_at=now - timedelta(minutes=m),
            dispatched_at=now, metadata=metadata)
        for m in minutes
    )


def test_pages_of_a_metadata_filter_hold_every_matching_job_once_forward_and_back(
    make_api: Callable[..., Api],
) -> None:
    # Given a client's labelled jobs: a run of them newest (pages found among the newest rows),
    # then 40 jobs without the label, then labelled ones with equal timestamps (pages the GIN
    # index reads, an offset cursor among the ties)
    api = make_api()
    dense = _jobs(api, [0, 1, 2, 3, 4, 5, 6], {"team": "a"})
    _jobs(api, list(range(10, 50)), {"team": "b"})
    sparse = _jobs(api, [60, 61, 61, 61, 62, 63, 63], {"team": "a"})
    expected = [str(job.id) for job in sorted(dense + sparse, key=lambda job: (job.created_at, job.pk), reverse=True)]

    # When the client walks its team=a jobs two at a time to the end, then back
    forward, last = walk(api, "/api/jobs/?metadata[team]=a&page_size=2", "next")
    backward, first = walk(api, relative(api, last["previous"]), "previous")

    # Then each came once, newest first, both ways
    assert [job for page in forward for job in page] == expected
    assert [job for page in reversed(backward) for job in page] + forward[-1] == expected
    assert first["previous"] is None


def _pages(http: DjangoClient, url: str) -> list[tuple[list[str], bool, bool]]:
    """The pages from `url` to the last, then back to the first: each page's jobs, and whether it
    links a next and a previous one."""
    pages: list[tuple[list[str], bool, bool]] = []
    page: dict[str, Any] = {"next": url}
    for direction in ("next", "previous"):
        while page[direction]:
            response = http.get(page[direction])
            assert response.status_code == 200, response.content[:300]
            page = response.json()
            pages.append(([job["id"] for job in page["results"]], bool(page["next"]), bool(page["previous"])))
    return pages


@pytest.mark.django_db
def test_a_metadata_page_is_the_page_the_plain_filter_reads_with_any_other_filter_and_page_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a client's 90 jobs over 15 minutes (ties of up to a dozen), labelled in varying shares,
    # in three statuses, beside another client's with the same labels
    rng = random.Random(7)
    owner, other = client_create(name="labelled"), client_create(name="other")
    now = timezone.now().replace(microsecond=0)
    labels = [{"team": "a"}, {"team": "a"}, {"team": "a", "env": "x"}, {"team": "b"}, {}]
    Job.objects.bulk_create(
        Job(owner=client, job_name="api.tasks.hello_world", status=rng.choice(["SUCCESS", "FAILURE", "PENDING"]),
            created_at=now - timedelta(minutes=rng.randrange(15)), dispatched_at=now, metadata=rng.choice(labels))
        for client in (owner, other) for _ in range(90)
    )
    http = DjangoClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(client=owner)}")
    since = (now - timedelta(minutes=6)).isoformat()
    queries = [{"metadata[team]": "a"}, {"metadata[env]": "x"}, {"metadata[team]": "b", "status": "FAILURE"},
               {"metadata[team]": "a", "created_after": since}, {"metadata[team]": "a", "created_before": since},
               {"metadata[team]": "a", "metadata[env]": "x"}, {"metadata[team]": "c"}]

    for query in queries:
        for size in (1, 4, 500):
            # When the client walks the list's pages to the last and back, read in two steps...
            url = f"/api/jobs/?{urlencode({**query, 'page_size': size})}"
            pages = _pages(http, url)
            # ...and as the plain filter reads them (through the GIN index alone)
            with monkeypatch.context() as plain:
                plain.setattr(jobs.api, "job_list_with_metadata", jobs_with_metadata)
                expected = _pages(http, url)

            # Then each page is the same, with the same links
            assert pages == expected, (query, size)
    # And the plans' settings are back as they were for what the connection runs next
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_seqscan'), current_setting('enable_bitmapscan')")
        assert cursor.fetchone() == ("on", "on")


@pytest.mark.parametrize(
    "query",
    ["metadata.team=a", "metadata%5B%5D=a", "metadata=a", "metadata%5Bteam=a", "metadata%5Bteam%5D=a&metadata%5Bteam%5D=b"],
    ids=["dotted", "empty key", "bare", "unclosed", "key twice"],
)
def test_a_metadata_filter_the_list_cannot_read_is_a_400_not_every_job(
    make_api: Callable[..., Api], query: str
) -> None:
    # Given a client with a job labelled team=a and one labelled team=b
    api = make_api()
    for team in ("a", "b"):
        assert api.post("/api/jobs/", json={
            "job_name": "api.tasks.hello_world", "metadata": {"team": team},
        }).status_code == 202
    assert [job["metadata"] for job in api.get("/api/jobs/?metadata%5Bteam%5D=a").json()["results"]] == [
        {"team": "a"}
    ]

    # When it filters by metadata in a form the list does not read
    response = api.get(f"/api/jobs/?{query}")

    # Then it is told so, where it was answered 200: both jobs, as though both matched (of a key
    # given twice, the last value's)
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "invalid_filter"
    assert list(error["details"]) == [query.split("=")[0].replace("%5B", "[").replace("%5D", "]")]
