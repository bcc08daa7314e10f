"""Thin HTTP views for jobs, job types, persisted results and the client's limits: parse, call,
serialize."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import client_writes
from core.errors import ApplicationError
from core.filters import NO_FILTERS, query_filtered
from core.pagination import NewestFirstCursorPagination
from jobs import idempotency, inputs, selectors, submission, transitions, waiting
from jobs.metadata_pages import job_list_with_metadata
from jobs.models import FINAL_WEBHOOK_EVENTS, IdempotencyKey, Job
from jobs.registry import job_types_all
from jobs.serializers import (
    JobListItemSerializer,
    JobResultListItemSerializer,
    JobResultSerializer,
    JobSerializer,
    LimitsSerializer,
    job_representation,
)
from jobs.submission import SubmissionRequest
from webhooks import outbox
from webhooks.api import DeliveryPagination, DeliverySerializer


def _idempotency_key(request: Request) -> str:
    """The key as its header's bytes, each read as one character (ISO-8859-1, as WSGI hands a
    header over): a key in UTF-8 is its bytes, as every key stored so far is. So its bytes are
    judged, not characters: a UTF-8 character's bytes 0x80-0xA0 read as C1 controls and a
    no-break space, and `str.isprintable()` refused `€`, `я`, `à` and every emoji as control
    characters, and `str.strip()` took a trailing 0xA0 (of `à`) off the key."""
    key = request.headers.get("Idempotency-Key", "").strip(" \t")
    if len(key) > 255:
        raise ApplicationError("Idempotency-Key is longer than 255 bytes.", code="invalid_header")
    # Control characters (U+0000 among them, which PostgreSQL cannot store) are no key: the
    # C0 controls and DEL, which HTTP's field values exclude (RFC 9110, 5.5).
    if any(char < " " or char == "\x7f" for char in key):
        raise ApplicationError(
            "Idempotency-Key must not contain control characters.", code="invalid_header"
        )
    return key


def _request_object(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise ApplicationError("The body must be a JSON object.", code="invalid")
    return request.data


def _paginated(
    request: Request, view: APIView, queryset: Any, serializer: Any,
    pagination: type[NewestFirstCursorPagination] = NewestFirstCursorPagination,
) -> Response:
    paginator = pagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)


def _accepted(job: Job, headers: dict[str, str] | None = None) -> Response:
    return Response(
        job_representation(job), status=status.HTTP_202_ACCEPTED,
        headers={"Location": f"/api/jobs/{job.id}/", **(headers or {})},
    )


def _waited(request: Request, job: Job, seconds: int | None) -> tuple[Job, dict[str, str]]:
    """Honour a `Prefer: wait=N` read by inputs.prefer_wait (jobs.waiting): the job once final
    or after N seconds, and the `Preference-Applied` header saying so; the job as it is when no
    wait is asked, or when the process's room has no place for one."""
    if seconds is None:
        return job, {}
    applied = {"Preference-Applied": f"wait={seconds}"}
    if job.is_final:
        # Nothing to wait for, so no place is taken; the room decides the header, as for a wait.
        return job, {} if waiting.room_refused(request.user.pk) else applied
    client = waiting.client_socket(request.META)
    waited = waiting.job_wait(owner=request.user, job=job, seconds=seconds, client=client)
    if waited is None:
        return job, {}  # as RFC 7240 allows: a preference not applied, and not said to be
    return waited, applied


def _client_gone() -> Response:
    # Nobody reads it: the client hung up while it waited (499, as nginx logs it; the request's
    # INFO line says so). Its reason phrase is nginx's too, where Django has "Unknown Status Code".
    response = Response(status=499)
    response.reason_phrase = "Client Closed Request"
    return response


class JobListCreateApi(APIView):
    throttle_scopes = {"POST": "submit"}

    def post(self, request: Request) -> Response:
        # Every header is read before the job is stored: nothing after the commit may fail the
        # request, or a client retrying the error would submit the job twice.
        wait_seconds = inputs.prefer_wait(request)
        cancel_after = inputs.cancel_after(request)
        with client_writes(request):
            job, _ = submission.job_submit(
                owner=request.user,
                request=inputs.submission_of(request.data, cancel_after=cancel_after),
                idempotency_key=_idempotency_key(request),
                request_body=request.data,
                request_headers=idempotency.request_headers(cancel_after=cancel_after),
            )
        try:
            job, headers = _waited(request, job, wait_seconds)
        except waiting.ClientGone:
            return _client_gone()
        return _accepted(job, headers)

    def get(self, request: Request) -> Response:
        jobs = selectors.job_list(owner=request.user, inline_max_bytes=settings.API_LIST_INLINE_MAX_BYTES)
        jobs = query_filtered(
            selectors.JobFilter, request, jobs, pagination=NewestFirstCursorPagination,
            read_elsewhere={"metadata[<key>]": inputs.metadata_parameter},
        )
        jobs = job_list_with_metadata(jobs, inputs.metadata_filters(request), owner=request.user)
        return _paginated(request, self, jobs, JobListItemSerializer)


class JobBatchCreateApi(APIView):
    """`POST /api/jobs/batch/`: up to API_MAX_BATCH_SIZE jobs, all or none."""

    throttle_scopes = {"POST": "submit"}

    @staticmethod
    def throttle_weight(request: Request) -> int:
        return inputs.batch_size(request)

    def post(self, request: Request) -> Response:
        cancel_after = inputs.cancel_after(request)
        with client_writes(request):
            jobs, _ = submission.jobs_submit_batch(
                owner=request.user,
                requests=inputs.batch_of(
                    request.data, max_jobs=inputs.batch_max_jobs(request.user), cancel_after=cancel_after
                ),
                idempotency_key=_idempotency_key(request),
                request_body=request.data,
                request_headers=idempotency.request_headers(cancel_after=cancel_after),
            )
        return Response({"jobs": [job_representation(job) for job in jobs]}, status=status.HTTP_202_ACCEPTED)


class JobDetailApi(APIView):
    def get(self, request: Request, job_id: str) -> Response:
        job = selectors.job_get(owner=request.user, job_id=job_id)
        try:
            job, headers = _waited(request, job, inputs.prefer_wait(request))
        except waiting.ClientGone:
            return _client_gone()
        response = Response(job_representation(job), headers=headers)
        # RFC 7240 section 2: an answer a preference may change names `Prefer` in `Vary`, asked or
        # not, so that no cache hands a waited answer to a poll, or a poll's to a wait.
        patch_vary_headers(response, ("Prefer",))
        return response


class JobCancelApi(APIView):
    def post(self, request: Request, job_id: str) -> Response:
        job = transitions.job_cancel(owner=request.user, job_id=job_id)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class JobDeliveryListApi(APIView):
    """The job's webhook deliveries, newest first, each with its attempts (a pruned job's too,
    while they are kept)."""

    def get(self, request: Request, job_id: str) -> Response:
        deliveries = selectors.job_deliveries(owner=request.user, job_id=job_id)
        # No filters: a parameter it does not take is refused all the same (a misspelt cursor).
        deliveries = query_filtered(NO_FILTERS, request, deliveries, pagination=DeliveryPagination)
        return _paginated(request, self, deliveries, DeliverySerializer, DeliveryPagination)


class JobRedeliverApi(APIView):
    """Send the job's final event again, with the same webhook-id and body."""

    throttle_scopes = {"POST": "sensitive"}

    def post(self, request: Request, job_id: str) -> Response:
        job = selectors.job_get(owner=request.user, job_id=job_id)
        delivery = outbox.delivery_redeliver(
            owner_id=request.user.pk, subject_id=job.id, event_types=FINAL_WEBHOOK_EVENTS,
            callback_url=job.callback_url,
        )
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class JobTypeListApi(APIView):
    def get(self, request: Request) -> Response:
        types = []
        for job_type in job_types_all():
            reason = job_type.unavailable_reason()
            types.append(
                {
                    "name": job_type.name,
                    "description": job_type.description,
                    "payload_schema": job_type.payload_schema(),
                    "persists_result": job_type.persist_result,
                    "available": reason is None,
                    "unavailable_reason": reason,
                    "max_payload_bytes": job_type.max_payload_bytes,
                    "retry_limits": None if job_type.retry_limits is None else {
                        "max_attempts": job_type.retry_limits.max_attempts,
                        "max_backoff_seconds": job_type.retry_limits.max_backoff_seconds,
                    },
                }
            )
        return Response({"results": types, "next": None, "previous": None})


class ResultListApi(APIView):
    def get(self, request: Request) -> Response:
        results = selectors.result_list(owner=request.user, inline_max_bytes=settings.API_LIST_INLINE_MAX_BYTES)
        results = query_filtered(selectors.JobResultFilter, request, results, pagination=NewestFirstCursorPagination)
        return _paginated(request, self, results, JobResultListItemSerializer)


class ResultDetailApi(APIView):
    def get(self, request: Request, result_id: int) -> Response:
        result = selectors.result_get(owner=request.user, result_id=result_id)
        return Response(JobResultSerializer(result).data)


class LimitsApi(APIView):
    """`GET /api/limits/`: the client's limits and how close it is to them (a read, in the read
    scope's budget like every GET)."""

    def get(self, request: Request) -> Response:
        with client_writes(request):  # its counts' row, made with it, gone with it
            limits = selectors.client_limits(owner=request.user, now=timezone.now())
        return Response(LimitsSerializer(limits).data)


# --- The starter's endpoints, kept for its clients ----------------------------------------------


class LegacyJobApi(APIView):
    """`POST /api/job/` -> `{"task_id"}`; `GET /api/job/?job_id=` -> `{"task_id", "status", "result"}`."""

    throttle_scopes = {"POST": "submit"}

    class InputSerializer(serializers.Serializer):
        job_name = serializers.CharField(max_length=200)
        payload = serializers.JSONField(required=False, default=dict)

    def post(self, request: Request) -> Response:
        body = _request_object(request)
        data = self.InputSerializer(data=body)
        data.is_valid(raise_exception=True)
        with client_writes(request):
            job, _ = submission.job_submit(
                owner=request.user,
                request=SubmissionRequest(job_name=data.validated_data["job_name"], payload=data.validated_data["payload"]),
                idempotency_key=_idempotency_key(request),
                request_body=body,
                endpoint=IdempotencyKey.Endpoint.LEGACY,
            )
        return Response({"task_id": str(job.id)}, status=status.HTTP_202_ACCEPTED)

    def get(self, request: Request) -> Response:
        job_id = request.query_params.get("job_id")
        if not job_id:
            raise ApplicationError(
                "The job_id query parameter is required.",
                code="missing_parameter",
                details={"job_id": ["This parameter is required."]},
            )
        job = selectors.job_get(owner=request.user, job_id=job_id)
        return Response({"task_id": str(job.id), "status": job.status, "result": job.result})
