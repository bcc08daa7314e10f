"""How a job and a persisted result look over HTTP (and inside webhook events)."""
from __future__ import annotations

from typing import Any

from rest_framework import serializers

from jobs.models import Job, JobResult


class JobProgressSerializer(serializers.Serializer):
    current = serializers.IntegerField()
    total = serializers.IntegerField()
    message = serializers.CharField(allow_blank=True)


class JobErrorSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="Machine-readable failure kind, e.g. `time_limit_exceeded`.")
    message = serializers.CharField()


class JobSerializer(serializers.ModelSerializer):
    progress = JobProgressSerializer(allow_null=True, read_only=True)
    error = JobErrorSerializer(allow_null=True, read_only=True)
    result = serializers.JSONField(allow_null=True, read_only=True)
    payload = serializers.JSONField(read_only=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "job_name",
            "status",
            "progress",
            "payload",
            "result",
            "error",
            "callback_url",
            "webhook_events",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


def job_representation(job: Job) -> dict[str, Any]:
    """The job exactly as `GET /api/jobs/<id>/` shows it."""
    return dict(JobSerializer(job).data)


class JobResultSerializer(serializers.ModelSerializer):
    job_id = serializers.UUIDField(allow_null=True, read_only=True)
    result = serializers.JSONField(allow_null=True, read_only=True)

    class Meta:
        model = JobResult
        fields = ["id", "job_id", "task_name", "result", "created_at"]
        read_only_fields = fields
