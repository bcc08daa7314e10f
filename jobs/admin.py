"""Admin for jobs (with a cancel action, on the list and on a job's page), persisted results and
each client's model usage of the day."""
from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.urls import URLPattern, path, reverse
from django_object_actions import action, takes_instance_or_queryset

from core.admin_object_actions import PermittedObjectActions
from core.admin_site import (
    LargeTableAdmin,
    action_apply,
    known_values_filter,
)
from jobs.models import Job, JobResult, ModelUsage
from jobs.registry import job_types_all
from jobs.retention import jobs_delete
from jobs.transitions import job_cancel


def _job_names() -> list[str]:
    return sorted(t.name for t in job_types_all())


@admin.register(Job)
class JobAdmin(PermittedObjectActions, LargeTableAdmin):
    list_display = ("id", "job_name", "status", "owner", "created_at", "started_at", "finished_at")
    # No filter or date hierarchy that reads the whole table on each page: the job types come
    # from the registry, and the dates' filter needs no query (a date hierarchy asks the table
    # for its first and last dates and every year it holds).
    list_filter = ("status", known_values_filter("job_name", "job name", _job_names), "created_at")
    search_fields = ("id", "owner__name", "callback_url")
    uuid_search_fields = ("id",)
    readonly_fields = [f.name for f in Job._meta.fields]
    list_select_related = ("owner",)
    # Its JSON columns, which the list shows none of (core/admin_site.py LargeTableAdmin).
    list_deferred = ("payload", "result", "step_input", "progress", "error", "metadata")
    actions = ("cancel",)
    change_actions = ("cancel",)
    deletion_listed_fields = ("id", "job_name", "status")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a job comes from its client's submission (every field here is read-only)

    # Deletions go through the service, which locks each job first: its worker's transition
    # under way then commits before the deletion reads what the job has (jobs.retention.jobs_delete).
    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        jobs_delete(job_ids=[obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        jobs_delete(job_ids=list(queryset.values_list("pk", flat=True)))

    def get_urls(self) -> list[URLPattern]:
        # A job's page's Cancel, ahead of django-object-actions' own view at that address, which
        # reads the job whole (up to a megabyte each of payload and result) only to hand it to the
        # action, which selects it again by its key. Its button still links there (the library's
        # template); the rest of the library's view is a POST-only check and the way back.
        return [
            path("<path:object_id>/actions/cancel/", self.admin_site.admin_view(self.cancel_view)),
            *super().get_urls(),
        ]

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            job = self.get_queryset(request).filter(pk=unquote(object_id))
        except ValidationError:  # not a job's id
            raise Http404 from None
        self.cancel(request, job)  # a job gone cancels nothing: its page then says it does not exist
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=(object_id,),
                                            current_app=self.admin_site.name))

    @action(label="Cancel", description="Cancel: at once if queued, within a step if running",
            permissions=["change"], methods=("POST",), button_type="form")
    @takes_instance_or_queryset
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        """As the client's cancel (jobs.transitions.job_cancel); a final job is left as it is.

        The selection is read for each job's name (its history entry) and client alone: the
        cancel locks and reads the job whole, as it must (its job.canceled event carries the whole
        job). Read whole as well (a job's page's Cancel selects through get_queryset, which defers
        none of the list's columns), a job's payload and result, up to a megabyte each, were read
        once more for nothing. (A job's page's Cancel comes through cancel_view, its selection too.)"""
        if not self.has_change_permission(request):
            raise PermissionDenied
        action_apply(self, request, queryset.select_related("owner").only(*self.deletion_listed_fields, "owner"),
                     _cancel, done=_canceled_message, refused="{count} job(s) were final already: left as they are.",
                     logged=_canceled_entry)


def _cancel(job: Job) -> None:
    """The job's cancel, its status as the cancel left it written on the selected row: its history
    entry names it (the selection's, from before the cancel, named a canceled job PENDING), and
    says what the cancel did. The job the cancel read whole is not kept: up to a megabyte each of
    payload and result, for each of the selected jobs."""
    job.status = job_cancel(owner=job.owner, job_id=job.pk).status


def _canceled_entry(job: Job) -> str:
    if job.is_final:
        return "Canceled (admin action)."
    # A running step stops at its next look at the flag (jobs.transitions._cancel_locked): the job
    # is still running as the entry is written.
    return f"Cancel requested (admin action): {job.status}, it stops within its running step."


def _canceled_message(jobs: list[Job]) -> str:
    stopping = sum(not job.is_final for job in jobs)
    said = [f"Canceled {len(jobs) - stopping} job(s)."] if len(jobs) > stopping else []
    if stopping:
        said.append(f"Asked {stopping} running job(s) to stop: each stops within its running step.")
    return " ".join(said)


@admin.register(JobResult)
class JobResultAdmin(LargeTableAdmin):
    list_display = ("id", "task_name", "job", "owner", "created_at")
    list_filter = (known_values_filter("task_name", "task name", _job_names), "created_at")
    search_fields = ("job__id", "owner__name")
    uuid_search_fields = ("job_id",)
    readonly_fields = [f.name for f in JobResult._meta.fields]
    # Its job, named in a column, read with the list rather than a query a row, without its
    # JSON columns.
    list_select_related = ("owner", "job")
    list_deferred = ("result", *(f"job__{name}" for name in JobAdmin.list_deferred))
    # Its deletion reads the chosen results' names, not each one joined to its job and client.
    deletion_listed_fields = ("id", "task_name")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a result comes from its job


@admin.register(ModelUsage)
class ModelUsageAdmin(LargeTableAdmin):
    """What each client's jobs spent on the model provider, a day a row: who is using the daily
    budget (MODEL_TOKENS_PER_CLIENT_PER_DAY) up. Read only, as the model's answers count it;
    deleting a client's row of today gives it the rest of the day's budget afresh."""

    list_display = ("owner", "day", "tokens")
    list_filter = ("day",)
    search_fields = ("owner__name",)
    ordering = ("-day", "-tokens")
    readonly_fields = [f.name for f in ModelUsage._meta.fields]
    list_select_related = ("owner",)
    deletion_listed_fields = ("id", "owner", "day", "tokens")  # what its name reads

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
