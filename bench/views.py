"""The baseline views: the framework's ceilings for the API's submit and poll."""
from __future__ import annotations

from django.db import transaction
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bench.celery import NAIVE_QUEUE, noop
from bench.models import BenchRow


class ConstantApi(APIView):
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadApi(APIView):
    """Read one row by primary key: the ceiling for polling a job."""

    def get(self, request: Request, row_id: str) -> Response:
        row = BenchRow.objects.get(pk=row_id)
        return Response(
            {"id": str(row.id), "name": row.name, "payload": row.payload, "created_at": row.created_at}
        )


class InsertPublishApi(APIView):
    """The naive submit: insert one row, publish one Celery message after the commit."""

    def post(self, request: Request) -> Response:
        with transaction.atomic():
            row = BenchRow.objects.create(name=request.data["job_name"], payload=request.data["payload"])
            transaction.on_commit(lambda: noop.apply_async(args=[str(row.id)], queue=NAIVE_QUEUE))
        return Response({"id": str(row.id)}, status=202)
