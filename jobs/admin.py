"""Admin for jobs and persisted results."""
from django.contrib import admin

from jobs.models import Job, JobResult


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "job_name", "status", "owner", "created_at", "started_at", "finished_at")
    list_filter = ("status", "job_name", "created_at")
    search_fields = ("id", "owner__name", "callback_url")
    readonly_fields = [f.name for f in Job._meta.fields]
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    show_full_result_count = False  # COUNT(*) over millions of rows on every page is slow


@admin.register(JobResult)
class JobResultAdmin(admin.ModelAdmin):
    list_display = ("id", "task_name", "job", "owner", "created_at")
    list_filter = ("task_name", "created_at")
    search_fields = ("job__id", "owner__name")
    readonly_fields = [f.name for f in JobResult._meta.fields]
    list_select_related = ("owner",)
    show_full_result_count = False
