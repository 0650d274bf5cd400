"""Pages every job app shares: job list, job detail (live progress), task detail, actions.

An app mounts them with its own models:

    urlpatterns += job_urlpatterns(SelectiveTransferJob, SelectiveTransferTask)

Non-staff users only ever find their own jobs and tasks (404 otherwise); staff find all.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, re_path, reverse
from django.views.decorators.http import require_POST

from .models import DicomJob, DicomTask, JobActionError

JOB_ACTIONS = {
    # action: (model method, staff only, message)
    "verify": ("verify", True, "The job was verified and queued."),
    "delete": ("delete_if_untouched", False, "The job was deleted."),
    "cancel": ("cancel", False, "The job is being canceled."),
    "resume": ("resume", False, "The job was resumed."),
    "retry": ("retry", False, "The failed tasks of the job were queued again."),
    "restart": ("restart", True, "The job was restarted."),
}
TASK_ACTIONS = {
    "delete": ("delete_pending", False, "The task was deleted."),
    "reset": ("reset", False, "The task was reset and queued again."),
    "kill": ("kill", True, "The task is being stopped."),
}
PAGE_SIZE = 50


def visible_jobs(job_model: type[DicomJob], user):
    jobs = job_model.objects.select_related("owner")
    return jobs if user.is_staff else jobs.filter(owner=user)


def visible_tasks(task_model: type[DicomTask], user):
    tasks = task_model.objects.select_related("job", "job__owner", "source")
    return tasks if user.is_staff else tasks.filter(job__owner=user)


def _url_name(model, suffix: str) -> str:
    return f"{model._meta.app_label}:{suffix}"


def job_urlpatterns(job_model: type[DicomJob], task_model: type[DicomTask]) -> list:
    """URL patterns of the shared job pages for one app (include them in the app's namespace)."""

    @login_required
    def job_list(request: HttpRequest) -> HttpResponse:
        jobs = visible_jobs(job_model, request.user)
        status = request.GET.get("status", "")
        if status in job_model.Status.values:
            jobs = jobs.filter(status=status)
        else:
            status = ""
        search = request.GET.get("q", "").strip()[:100]
        if search:
            condition = Q(message__icontains=search) | Q(owner__username__icontains=search)
            if search.isdigit():
                condition |= Q(pk=int(search))
            jobs = jobs.filter(condition)
        page = Paginator(jobs.order_by("-created"), PAGE_SIZE).get_page(request.GET.get("page"))
        return render(
            request,
            "core/job_list.html",
            {
                "page": page,
                "status": status,
                "search": search,
                "statuses": job_model.Status.choices,
                "job_model_name": job_model._meta.verbose_name,
                "app_label": job_model._meta.app_label,
            },
        )

    def _job(request, pk):
        return get_object_or_404(visible_jobs(job_model, request.user), pk=pk)

    def _job_context(request, job) -> dict:
        counts = job.task_counts()
        total = sum(counts.values())
        finished = sum(counts[status] for status in DicomTask.FINAL_STATUSES)
        return {
            "job": job,
            "counts": counts,
            "total": total,
            "finished": finished,
            "percent": round(100 * finished / total) if total else 100,
            "running": job.status not in DicomJob.FINAL_STATUSES,
            "app_label": job_model._meta.app_label,
            "is_staff": request.user.is_staff,
        }

    @login_required
    def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
        job = _job(request, pk)
        context = _job_context(request, job)
        tasks = job.tasks.select_related("source").order_by("id")
        context["task_page"] = Paginator(tasks, PAGE_SIZE).get_page(request.GET.get("page"))
        # An app may extend the page with "<app_label>/job_detail.html" (block.super).
        templates = [f"{job_model._meta.app_label}/job_detail.html", "core/job_detail.html"]
        return render(request, templates, context)

    @login_required
    def job_progress(request: HttpRequest, pk: int) -> HttpResponse:
        """The progress fragment the job page polls while the job runs."""
        job = _job(request, pk)
        response = render(request, "core/_job_progress.html", _job_context(request, job))
        if job.status in DicomJob.FINAL_STATUSES:
            # The whole page shows new buttons and task states once the job has ended.
            response["HX-Refresh"] = "true"
        return response

    @login_required
    @require_POST
    def job_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
        job = _job(request, pk)
        method, staff_only, done = JOB_ACTIONS[action]
        if staff_only and not request.user.is_staff:
            raise PermissionDenied
        try:
            getattr(job, method)()
        except JobActionError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, done)
            if action == "delete":
                return redirect(_url_name(job_model, "job_list"))
        return redirect(_url_name(job_model, "job_detail"), pk=pk)

    @login_required
    def task_detail(request: HttpRequest, pk: int) -> HttpResponse:
        task = get_object_or_404(visible_tasks(task_model, request.user), pk=pk)
        return render(
            request,
            [f"{job_model._meta.app_label}/task_detail.html", "core/task_detail.html"],
            {
                "task": task,
                "app_label": job_model._meta.app_label,
                "is_staff": request.user.is_staff,
            },
        )

    @login_required
    @require_POST
    def task_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
        task = get_object_or_404(visible_tasks(task_model, request.user), pk=pk)
        method, staff_only, done = TASK_ACTIONS[action]
        if staff_only and not request.user.is_staff:
            raise PermissionDenied
        job_pk = task.job_id
        try:
            getattr(task, method)()
        except JobActionError as error:
            messages.error(request, str(error))
            return redirect(_url_name(job_model, "task_detail"), pk=pk)
        messages.success(request, done)
        if action == "delete":
            return redirect(_url_name(job_model, "job_detail"), pk=job_pk)
        return redirect(_url_name(job_model, "task_detail"), pk=pk)

    job_actions = "|".join(JOB_ACTIONS)
    task_actions = "|".join(TASK_ACTIONS)
    return [
        path("jobs/", job_list, name="job_list"),
        path("jobs/<int:pk>/", job_detail, name="job_detail"),
        path("jobs/<int:pk>/progress/", job_progress, name="job_progress"),
        re_path(rf"^jobs/(?P<pk>\d+)/(?P<action>{job_actions})/$", job_action, name="job_action"),
        path("tasks/<int:pk>/", task_detail, name="task_detail"),
        re_path(
            rf"^tasks/(?P<pk>\d+)/(?P<action>{task_actions})/$",
            task_action,
            name="task_action",
        ),
    ]


def job_detail_url(job: DicomJob) -> str:
    return reverse(f"{job._meta.app_label}:job_detail", args=[job.pk])
