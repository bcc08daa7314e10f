"""Routes for jobs, job types, persisted results and the client's limits (and the starter's endpoints)."""
from django.urls import path

from jobs import api, stream_api

urlpatterns = [
    path("jobs/", api.JobListCreateApi.as_view(), name="job-list"),
    path("jobs/batch/", api.JobBatchCreateApi.as_view(), name="job-batch"),
    path("jobs/<uuid:job_id>/", api.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<uuid:job_id>/events/", stream_api.JobEventStreamApi.as_view(), name="job-events"),
    path("events/", stream_api.EventStreamApi.as_view(), name="event-stream"),
    path("jobs/<uuid:job_id>/cancel/", api.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<uuid:job_id>/deliveries/", api.JobDeliveryListApi.as_view(), name="job-deliveries"),
    path("jobs/<uuid:job_id>/redeliver/", api.JobRedeliverApi.as_view(), name="job-redeliver"),
    path("job-types/", api.JobTypeListApi.as_view(), name="job-type-list"),
    path("results/", api.ResultListApi.as_view(), name="result-list"),
    path("results/<int:result_id>/", api.ResultDetailApi.as_view(), name="result-detail"),
    path("limits/", api.LimitsApi.as_view(), name="limits"),
    path("job/", api.LegacyJobApi.as_view(), name="legacy-job"),
]
