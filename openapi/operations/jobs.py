"""The job, job-type and result operations, and the starter's (see openapi.operations)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema

from jobs.models import Job
from jobs.selectors import NO_RESULT
from jobs.serializers import JobResultSerializer, JobSerializer, LimitsSerializer
from openapi import schemas
from openapi.examples import (
    BATCH_EXAMPLE,
    JOB_DONE_EXAMPLE,
    JOB_EXAMPLE,
    JOB_TYPE_EXAMPLE,
    LIMITS_EXAMPLE,
    NEXT_PAGE_EXAMPLE,
    RESULT_EXAMPLE,
    SUBMIT_EXAMPLES,
    list_item,
    page,
)
from openapi.operations.streams import PREFER
from openapi.schemas import (
    CANCEL_AFTER,
    CURSOR,
    IDEMPOTENCY_KEY,
    JOB_ID,
    LIST_400,
    METADATA_FILTER,
    PAGE_SIZE,
    error_responses,
    example_response,
    query_parameter,
)

# The starter's poll has one 400 of its own: its `job_id` missing (a malformed one answers 404).
_LEGACY_GET_400 = {
    400: (
        (
            "The `job_id` query parameter is missing or empty. Code: `missing_parameter`."
        ),
        schemas.error_example(400, "missing_parameter", "The job_id query parameter is required.",
                              {"job_id": ["This parameter is required."]}),
    )
}

# A batch's own 400s first: a batch is refused whole.
_BATCH_400 = {
    400: (
        (
            "The request is invalid; no job was created. Codes: `invalid_batch` (submissions of the "
            "batch are invalid: `details.jobs` lists each one's `index`, `code`, `message` and "
            "`details`, the codes a single submission would get), `batch_too_large` (more jobs than "
            "`details.max_jobs`), `invalid` (the body is not `{\"jobs\": [...]}`), `invalid_header` "
            "(`Idempotency-Key`, `Cancel-After`), `malformed_json`, `invalid_json`, `json_too_deep`, "
            "`bad_request`."
        ),
        schemas.error_example(
            400, "invalid_batch", "1 of the 2 jobs are invalid; none was created.",
            {"jobs": [{"index": 1, "code": "unknown_job_name",
                       "message": "Unknown job_name 'nope'; valid job names: api.tasks.hello_world, ...",
                       "details": {"valid_job_names": ["api.tasks.hello_world", "api.tasks.long_running_task"]}}]},
        ),
    )
}
_CANCEL_409 = {
    409: (
        "The job is already final (`SUCCESS`, `FAILURE` or `REVOKED`): nothing to cancel. Code: `job_already_final`.",
        schemas.error_example(409, "job_already_final", "The job is already SUCCESS."),
    )
}


OPERATIONS: dict[str, dict[str, Callable[..., Any]]] = {
    "jobs.api.JobListCreateApi": {
        "post": extend_schema(
            operation_id="submit_job",
            summary="Submit a job",
            description="Validates the payload against the job type's schema and queues "
            "the job. The answer is `202 Accepted` with the job (status `PENDING`) and a "
            "`Location` to poll. Nothing is created when the answer is an error.\n\n"
            "The body is one of the job types below, chosen by `job_name`; "
            "`GET /api/job-types/` lists them at run time with their availability.\n\n"
            "With `Prefer: wait=N` the answer (still `202`) comes once the job is final, or "
            "after `N` seconds with the job as it is then.",
            tags=["Jobs"],
            request=schemas.JobSubmissionSerializer,
            parameters=[IDEMPOTENCY_KEY, CANCEL_AFTER, PREFER],
            examples=SUBMIT_EXAMPLES,
            responses={
                202: example_response(
                    JobSerializer,
                    "Accepted: the job is queued.",
                    "job",
                    {**JOB_EXAMPLE, "status": "PENDING", "progress": None, "started_at": None},
                    status="202",
                ),
                **error_responses(400, 401, 408, 409, 413, 415, 422, 429),
            },
        ),
        "get": extend_schema(
            operation_id="list_jobs",
            summary="List jobs",
            description="This API key's client's jobs, newest first, in pages. "
            "Follow `next` until it is null.\n\nEach item is the job as its own URL shows it, "
            "but a `payload` or `result` whose JSON is over `API_LIST_INLINE_MAX_BYTES` (4 KiB "
            "by default) is null and named in `omitted`: the job's URL has it whole.",
            tags=["Jobs"],
            parameters=[
                query_parameter(
                    "status",
                    OpenApiTypes.STR,
                    "Only jobs in this status.",
                    enum=[choice for choice, _ in Job.Status.choices],
                ),
                query_parameter("job_name", OpenApiTypes.STR, "Only jobs of this type."),
                query_parameter(
                    "created_after",
                    OpenApiTypes.DATETIME,
                    "Only jobs created at or after this time (ISO 8601).",
                ),
                query_parameter(
                    "created_before",
                    OpenApiTypes.DATETIME,
                    "Only jobs created before this time (ISO 8601).",
                ),
                METADATA_FILTER,
                CURSOR,
                PAGE_SIZE,
            ],
            responses={
                200: example_response(
                    schemas.JobPageSerializer,
                    "A page of jobs.",
                    "page",
                    page(list_item(JOB_DONE_EXAMPLE), next_url=NEXT_PAGE_EXAMPLE),
                ),
                **error_responses(400, 401, described=LIST_400),
            },
        ),
    },
    "jobs.api.JobBatchCreateApi": {
        "post": extend_schema(
            operation_id="submit_job_batch",
            summary="Submit a batch of jobs",
            description="Up to 1,000 jobs in one request (`API_MAX_BATCH_SIZE`), each validated "
            "as `POST /api/jobs/` validates one: all or nothing. One bad item refuses the whole "
            "batch with `400 invalid_batch`, `details.jobs` listing each bad item's `index`, "
            "`code`, `message` and `details`. Accepted, the jobs are made in one transaction "
            "and answered in order. Each job counts against the submission rate and the "
            "unfinished-job cap, so a batch larger than either (where the operator set a "
            "client's lower than 1,000) is `400 batch_too_large`; an `Idempotency-Key` covers "
            "the whole batch.",
            tags=["Jobs"],
            request=schemas.JobBatchSubmissionSerializer,
            parameters=[IDEMPOTENCY_KEY, CANCEL_AFTER],
            examples=[BATCH_EXAMPLE],
            responses={
                202: OpenApiResponse(schemas.JobBatchSerializer, description="Accepted: the jobs, in order."),
                **error_responses(400, 401, 408, 409, 413, 415, 422, 429, described=_BATCH_400),
            },
        ),
    },
    "jobs.api.JobDetailApi": {
        "get": extend_schema(
            operation_id="get_job",
            summary="Get a job",
            description="The job's current state: poll this until `status` is final "
            "(`SUCCESS`, `FAILURE` or `REVOKED`). `progress` shows how far a running job is. "
            "With `Prefer: wait=N` it answers as soon as the job is final (or after `N` s).",
            tags=["Jobs"],
            parameters=[JOB_ID, PREFER],
            responses={
                200: example_response(
                    JobSerializer, "The job.", "job", JOB_DONE_EXAMPLE, status="200"
                ),
                **error_responses(401, 404),
            },
        ),
    },
    "jobs.api.JobCancelApi": {
        "post": extend_schema(
            operation_id="cancel_job",
            summary="Cancel a job",
            description="A queued job becomes `REVOKED` at once, and so does one waiting between two "
            "runs (a retry's backoff) or two steps; a running one stops at its next step, within a few "
            "seconds. Answers with the job as it is now. "
            "A job already in a final state answers 409.",
            tags=["Jobs"],
            parameters=[JOB_ID],
            request=None,
            responses={
                202: example_response(
                    JobSerializer,
                    "Cancellation requested.",
                    "job",
                    {**JOB_EXAMPLE, "status": "STARTED"},
                    status="202",
                ),
                **error_responses(401, 404, 409, described=_CANCEL_409),
            },
        ),
    },
    "jobs.api.JobTypeListApi": {
        "get": extend_schema(
            operation_id="list_job_types",
            summary="List job types",
            description="Every registered job type, with its payload's JSON Schema and "
            "whether it can run now. One page: `next` and `previous` are always null.",
            tags=["Job types"],
            responses={
                200: example_response(
                    schemas.JobTypePageSerializer,
                    "All job types.",
                    "job types",
                    page(JOB_TYPE_EXAMPLE),
                ),
                **error_responses(401),
            },
        ),
    },
    "jobs.api.ResultListApi": {
        "get": extend_schema(
            operation_id="list_results",
            summary="List persisted results",
            description="Results kept by job types that persist them, newest first, in "
            "pages. A result outlives its job.\n\nA `result` whose JSON is over "
            "`API_LIST_INLINE_MAX_BYTES` (4 KiB by default) is null and named in `omitted`: "
            "`GET /api/results/{result_id}/` has it whole.",
            tags=["Results"],
            parameters=[
                query_parameter(
                    "task_name",
                    OpenApiTypes.STR,
                    "Only results of this job type (`job_name`).",
                ),
                CURSOR,
                PAGE_SIZE,
            ],
            responses={
                200: example_response(
                    schemas.JobResultPageSerializer,
                    "A page of results.",
                    "page",
                    page(list_item(RESULT_EXAMPLE)),
                ),
                **error_responses(400, 401, described=LIST_400),
            },
        ),
    },
    "jobs.api.ResultDetailApi": {
        "get": extend_schema(
            operation_id="get_result",
            summary="Get a persisted result",
            description="One persisted result.",
            tags=["Results"],
            parameters=[OpenApiParameter("result_id", OpenApiTypes.INT, OpenApiParameter.PATH)],
            responses={
                200: example_response(JobResultSerializer, "The result.", "result", RESULT_EXAMPLE),
                **error_responses(401, 404, described={
                    404: (schemas.NOT_FOUND, schemas.error_example(404, "not_found", NO_RESULT))}),
            },
        ),
    },
    "jobs.api.LimitsApi": {
        "get": extend_schema(
            operation_id="get_limits",
            summary="Get your limits and usage",
            description="Each limit this API key's client is held to, as it applies to it (the "
            "operator's override in the admin, or the setting every client shares), with what it "
            "uses of it now, so that an integration can size its concurrency and alert before a "
            "429. A `limit` of null means no limit.\n\nThe counts are exact as of the request: "
            "`used` of `unfinished_jobs` goes up at a submission and down as the job ends. The "
            "rates show no remaining budget: each API process admits on its own counts between "
            "its syncs with the others, so none would be exact; a 429 "
            "`rate_limited` says when to retry. An operator's change shows within "
            "`API_KEY_CACHE_SECONDS` (5 s), as it applies.",
            tags=["Limits"],
            responses={
                200: example_response(LimitsSerializer, "The limits and usage.", "limits", LIMITS_EXAMPLE),
                **error_responses(401),
            },
        ),
    },
    "jobs.api.LegacyJobApi": {
        "post": extend_schema(
            operation_id="legacy_submit_job",
            summary="Submit a job (starter API)",
            description="The starter's submission endpoint, kept for its clients: the same "
            "validation, idempotency and limits as `POST /api/jobs/`, answering only the "
            "job's id (its idempotency keys are its own: a key sent here answers here only). "
            "New clients use `POST /api/jobs/`.",
            tags=["Starter API"],
            deprecated=True,
            request=schemas.LegacyJobSubmissionSerializer,
            parameters=[IDEMPOTENCY_KEY],
            examples=[SUBMIT_EXAMPLES[0]],
            responses={
                202: example_response(
                    schemas.LegacyJobCreatedSerializer,
                    "Accepted: the job is queued.",
                    "created",
                    {"task_id": JOB_EXAMPLE["id"]},
                ),
                **error_responses(400, 401, 408, 409, 413, 415, 422, 429),
            },
        ),
        "get": extend_schema(
            operation_id="legacy_get_job_status",
            summary="Get a job's status (starter API)",
            description="The starter's polling endpoint, kept for its clients. "
            "New clients use `GET /api/jobs/{job_id}/`.",
            tags=["Starter API"],
            deprecated=True,
            parameters=[
                query_parameter(
                    "job_id",
                    OpenApiTypes.STR,
                    "The job's id (`task_id` from the submission).",
                    required=True,
                )
            ],
            responses={
                200: example_response(
                    schemas.LegacyJobStatusSerializer,
                    "The job's status, and its result once SUCCESS.",
                    "done",
                    {
                        "task_id": JOB_EXAMPLE["id"],
                        "status": "SUCCESS",
                        "result": "hello world there",
                    },
                ),
                **error_responses(400, 401, 404, described=_LEGACY_GET_400),
            },
        ),
    },
}
