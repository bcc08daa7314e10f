"""What a submission looks like over HTTP: its body's shape (one job, or a batch), the
`Cancel-After` header and the list's metadata filters, parsed into the services' terms."""
from __future__ import annotations

import copy
import dataclasses
import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers
from rest_framework.request import Request

from core.errors import ApplicationError
from core.fields import TimestampField
from core.limits import client_limit
from core.models import Client
from jobs.models import WEBHOOK_EVENT_TYPES
from jobs.serializers import JobRetrySerializer
from jobs.submission import SubmissionRequest

METADATA_MAX_KEYS = 16
METADATA_MAX_KEY_CHARS = 40
METADATA_MAX_VALUE_CHARS = 500
# `metadata[<key>]=<value>` in a list's query string.
_METADATA_PARAMETER = re.compile(r"\Ametadata\[(.+)\]\Z")
# `Cancel-After`: seconds, or a number with a unit (s, m, h), as Replicate takes it. Around it,
# HTTP's whitespace alone (SP, HTAB): Python's `\s` and `\d` are Unicode's, which read a Latin-1
# no-break space (0xa0) as a space and `٥` as a digit 5.
_DURATION = re.compile(r"\A[ \t]*([0-9]{1,9})(?:\.([0-9]{1,6}))?[ \t]*([smh]?)[ \t]*\Z")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


class MetadataField(serializers.DictField):
    """At most 16 string keys (1 to 40 characters, no square brackets: the list filter's
    `metadata[key]` syntax) to string values (up to 500 characters)."""

    child = serializers.CharField(max_length=METADATA_MAX_VALUE_CHARS, allow_blank=True, trim_whitespace=False)

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if isinstance(data, dict) and not all(isinstance(item, str) for item in data.values()):
            raise serializers.ValidationError("Values are strings.")
        # Counted before each is checked: a 1 MiB body holds 55,000 of them (242 ms of checks).
        if isinstance(data, dict) and len(data) > METADATA_MAX_KEYS:
            raise serializers.ValidationError(f"At most {METADATA_MAX_KEYS} keys.")
        value = super().to_internal_value(data)
        for key in value:
            if not 1 <= len(key) <= METADATA_MAX_KEY_CHARS or "[" in key or "]" in key:
                raise serializers.ValidationError(
                    f"Keys are 1 to {METADATA_MAX_KEY_CHARS} characters, without square brackets: {key[:50]!r}."
                )
        return value


class SubmissionInput(serializers.Serializer):
    """One job's submission. Only the fields the body sends are built (job_name always): DRF
    builds each declared field anew for every request, 10-70 µs apiece (a deep copy), and most
    submissions send two of these nine. What the body leaves out takes SubmissionRequest's
    defaults."""

    job_name = serializers.CharField(max_length=200, help_text="A registered job type.")
    payload = serializers.JSONField(required=False)
    callback_url = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    webhook_events = serializers.ListField(
        child=serializers.ChoiceField(choices=WEBHOOK_EVENT_TYPES),
        required=False,
        allow_empty=False,
        max_length=len(WEBHOOK_EVENT_TYPES),
    )
    metadata = MetadataField(required=False)
    run_at = TimestampField(required=False, allow_null=True)
    deadline = TimestampField(required=False, allow_null=True)
    retry = JobRetrySerializer(required=False, allow_null=True)
    webhook_endpoints = serializers.BooleanField(required=False)

    def get_fields(self) -> dict[str, serializers.Field]:
        sent = getattr(self, "initial_data", None)  # a dict (submission_of checked), or no body
        if sent is None:
            return super().get_fields()
        return {
            name: copy.deepcopy(field)  # as DRF's own get_fields copies each declared field
            for name, field in self._declared_fields.items()
            if field.required or name in sent
        }

    def to_request(self) -> SubmissionRequest:
        data = dict(self.validated_data)
        if data.get("retry"):
            data["retry"] = dict(data["retry"])
        return SubmissionRequest(**data)


def submission_of(body: Any, *, cancel_after: timedelta | None = None) -> SubmissionRequest:
    """One job's submission from its JSON body; 400 (code `invalid`, field errors) otherwise."""
    if not isinstance(body, dict):
        raise ApplicationError("A submission must be a JSON object.", code="invalid")
    data = SubmissionInput(data=body)
    if not data.is_valid():
        raise ApplicationError("The request is invalid; see details.", code="invalid", details=data.errors)
    request = data.to_request()
    if cancel_after is not None:
        if request.deadline is not None:
            raise ApplicationError("Send a deadline or a Cancel-After header, not both.", code="invalid")
        return dataclasses.replace(request, deadline=timezone.now() + cancel_after)
    return request


def cancel_after(request: Request) -> timedelta | None:
    """The `Cancel-After` header as a duration, or None; 400 when it is not one."""
    value = request.headers.get("Cancel-After")
    if value is None:
        return None
    match = _DURATION.match(value)
    if match is None or not value.strip():
        raise ApplicationError(
            "Cancel-After is a number of seconds, or a number with a unit s, m or h (e.g. 90, 90s, 5m).",
            code="invalid_header",
        )
    whole, fraction, unit = match.groups()
    seconds = (int(whole) + float(f"0.{fraction or 0}")) * _UNIT_SECONDS[unit]
    if seconds <= 0:
        raise ApplicationError("Cancel-After must be more than zero.", code="invalid_header")
    duration = timedelta(seconds=seconds)
    try:
        timezone.now() + duration
    except OverflowError:  # past year 9999: no deadline can say it (999999999h was a 500)
        raise ApplicationError("Cancel-After is too far ahead.", code="invalid_header") from None
    return duration


def batch_max_jobs(client: Client) -> int:
    """The most jobs a batch of the client's may hold: API_MAX_BATCH_SIZE, or fewer where its
    submission rate a minute or its cap on unfinished jobs is lower (0: none). A batch spends
    one of each a job, so a larger one could never be accepted: it was answered 429 with a
    Retry-After, and the client waited and sent it again, for ever."""
    own = (client_limit(client=client, limit=limit) for limit in ("submit_rate_per_minute", "max_unfinished_jobs"))
    return min([settings.API_MAX_BATCH_SIZE, *(limit for limit in own if limit)])


def batch_of(
    body: Any, *, max_jobs: int, cancel_after: timedelta | None = None
) -> list[SubmissionRequest | ApplicationError]:
    """A batch's submissions from `{"jobs": [...]}`, each parsed alone: a submission, or the
    error that makes it invalid (reported by index with the others'); 400 batch_too_large
    past `max_jobs` (batch_max_jobs)."""
    jobs = body.get("jobs") if isinstance(body, dict) else None
    if not isinstance(jobs, list) or not jobs:
        raise ApplicationError("The body must be {\"jobs\": [<submission>, ...]}.", code="invalid")
    if len(jobs) > max_jobs:
        raise ApplicationError(
            f"A batch holds at most {max_jobs} jobs; this one has {len(jobs)}.",
            code="batch_too_large",
            details={"max_jobs": max_jobs},
        )
    parsed: list[SubmissionRequest | ApplicationError] = []
    for item in jobs:
        try:
            parsed.append(submission_of(item, cancel_after=cancel_after))
        except ApplicationError as exc:
            parsed.append(exc)
    return parsed


def batch_size(request: Request) -> int:
    """How many jobs a batch request asks for (what it spends of the submission rate). A batch
    larger than a batch of its client's may be (batch_max_jobs) spends 1: it is refused for its
    size (400 batch_too_large); a weight larger than the rate would answer 429 instead, and the
    client would wait and send it again, for ever."""
    jobs = request.data.get("jobs") if isinstance(request.data, dict) else None
    if not isinstance(jobs, list) or len(jobs) > batch_max_jobs(request.user):
        return 1
    return max(1, len(jobs))


def metadata_parameter(name: str) -> bool:
    """Whether a query parameter is a metadata filter, `metadata[<key>]` (a key of at least one
    character). The list's query reader (core.filters.query_filtered) refuses any other, such as
    `metadata.team`, `metadata[]` or `metadata`, and a key given twice, in the one 400 that names
    the query's every problem: ignored, as any name a list does not know was, the client asked for
    some of its jobs and was answered all of them, as though all matched (a script acting on the
    jobs it was answered acted on every one), and of a key given twice the last value was used."""
    return _METADATA_PARAMETER.match(name) is not None


def metadata_filters(request: Request) -> dict[str, str]:
    """The list's `metadata[<key>]=<value>` filters, from a query query_filtered has read (and
    refused, had any been malformed or repeated)."""
    return {
        match.group(1): value
        for name, value in request.query_params.items()
        if (match := _METADATA_PARAMETER.match(name)) is not None
    }


# One preference of a `Prefer` header (RFC 7240: token [ BWS "=" BWS word ] *( OWS ";" [ OWS
# parameter ] )): a token, optionally `=` a token or quoted value, then its end or its parameters'
# `;`, HTTP's whitespace (SP, HTAB) around them, not Python's Unicode `\s` (a no-break space, 0xa0).
# Matched to that end: `wait\xa0=5`, `wait x=5` or `wait/5` is malformed, ignored as `wait=soon`
# is, where its `wait` alone matched and it waited as long as a bare `wait`, the longest wait. The
# quantifiers are possessive (`*+`): runs of spaces on both sides of an empty value were tried at
# each split once the end had to match (100,000 spaces: 50 s of CPU).
_PREFERENCE = re.compile(
    r'\A[ \t]*+([!#$%&\'*+.^_`|~0-9A-Za-z-]++)[ \t]*+(?:=[ \t]*+("(?:[^"\\]|\\.)*+"|[^ \t;,]*+))?[ \t]*+(?:;|\Z)'
)
# The header's preferences: what lies between the commas outside quoted strings (RFC 9110's
# quoted-string, `\"` in it escaped), so that another preference's quoted value is never read as
# one (`foo="a, wait=1"` asks no wait). A quote never closed runs to the end: were it a character
# like any other, each quote of a header of them would be tried as an opening one to its end,
# quadratic (8 KB: 0.2 s of CPU; the header of many `Prefer` lines gunicorn joins: minutes).
_ELEMENT = re.compile(r'(?:"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[^,"])+')


def prefer_wait(request: Request) -> int | None:
    """The seconds a `Prefer: wait=N` asks to wait, capped at API_MAX_WAIT_SECONDS (bare `wait`:
    the cap); None when it asks no wait. As RFC 7240 has it, a preference that cannot be
    understood (`wait=soon`, `wait=0`, `wait=`) is ignored, not an error."""
    for preference in _ELEMENT.findall(request.headers.get("Prefer", "")):
        match = _PREFERENCE.match(preference)
        if not match or match.group(1).lower() != "wait":
            continue
        if match.group(2) is None:  # a bare `wait`
            return settings.API_MAX_WAIT_SECONDS
        value = match.group(2).strip('"')
        # isdigit() alone passes `²`, int() refuses it. An empty value (`wait=`, `wait=""`) is
        # no delta-seconds either: it waited as long as a bare `wait`, the longest wait.
        if not (value.isascii() and value.isdigit()):
            return None
        seconds = float(value)  # any number of digits (int() stops at 4,300): a huge one is inf, then the cap
        if seconds < 1:
            return None
        return int(min(seconds, settings.API_MAX_WAIT_SECONDS))
    return None
