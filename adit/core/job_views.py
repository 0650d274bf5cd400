"""Pages every job app shares: job list, job detail (live progress), task detail, actions.

An app mounts them with its own models:

    urlpatterns += job_urlpatterns(SelectiveTransferJob, SelectiveTransferTask)

Non-staff users only ever find their own jobs and tasks (404 otherwise); staff find all.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import pluralize
from django.urls import path, re_path, reverse
from django.views.decorators.http import require_POST

from .job_overview import (
    JobFilterForm,
    JobRow,
    all_jobs_page,
    job_models,
    rows_of,
    summarize,
    visible_jobs,
)
from .models import DicomJob, DicomTask, JobActionError

__all__ = ["job_urlpatterns", "job_detail_url", "visible_jobs", "visible_tasks", "all_jobs"]

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


@dataclass(frozen=True)
class ActionButton:
    """An action a page offers now: its button, one-line help and (optional) confirmation."""

    action: str
    label: str
    icon: str
    style: str
    help: str
    confirm: str = ""


def offered_job_actions(job: DicomJob, user, counts: dict[str, int]) -> list[ActionButton]:
    """The job actions allowed now, in the order of the page (the action checks again)."""
    total = sum(counts.values())
    failed = counts[DicomTask.Status.FAILURE]
    canceled = counts[DicomTask.Status.CANCELED]
    buttons = []
    if job.is_verifiable and user.is_staff:
        buttons.append(
            ActionButton(
                "verify", "Verify", "check2-circle", "success",
                "Approve the job: its tasks are queued and run.",
            )
        )  # fmt: skip
    if job.is_cancelable:
        buttons.append(
            ActionButton(
                "cancel", "Cancel", "x-circle", "warning",
                "Stop the job: waiting tasks are canceled, running ones aborted.",
                "Cancel this job? Tasks that have not run are canceled and running tasks are "
                "aborted; what was already transferred stays at the destination. You can "
                "resume the job later.",
            )
        )  # fmt: skip
    if job.is_resumable:
        buttons.append(
            ActionButton(
                "resume", "Resume", "play-circle", "primary",
                "Queue the canceled tasks again; finished tasks are kept.",
                f"Resume this job? Its {canceled} canceled task{pluralize(canceled)} will run "
                "(and send their data) again.",
            )
        )  # fmt: skip
    if job.is_retriable:
        buttons.append(
            ActionButton(
                "retry", "Retry failed tasks", "arrow-repeat", "primary",
                "Run only the failed tasks again; tasks that succeeded are not sent again.",
                f"Retry the {failed} failed task{pluralize(failed)}? "
                f"{'Their' if failed != 1 else 'Its'} data is fetched and sent again.",
            )
        )  # fmt: skip
    if job.is_restartable and user.is_staff:
        buttons.append(
            ActionButton(
                "restart", "Restart", "arrow-counterclockwise", "secondary",
                "Run every task again from the start, also those that succeeded.",
                f"Restart this job? All {total} task{pluralize(total)} run again and send "
                "their data again, also those that succeeded.",
            )
        )  # fmt: skip
    if job.is_deletable:
        buttons.append(
            ActionButton(
                "delete", "Delete", "trash", "danger",
                "Delete the job and its tasks (only before a worker took any of them).",
                f"Delete this job and its {total} task{pluralize(total)}? This cannot be undone.",
            )
        )  # fmt: skip
    return buttons


def offered_task_actions(task: DicomTask, user) -> list[ActionButton]:
    buttons = []
    if task.is_resettable:
        buttons.append(
            ActionButton(
                "reset", "Reset", "arrow-counterclockwise", "primary",
                "Run this task again from the start.",
                "Run this task again? Its data is fetched and sent again and its log is cleared.",
            )
        )  # fmt: skip
    if task.is_killable and user.is_staff:
        buttons.append(
            ActionButton(
                "kill", "Kill", "stop-circle", "danger",
                "Abort this running task now (it ends as canceled).",
                "Stop this running task? It ends as canceled; what it already sent stays.",
            )
        )  # fmt: skip
    if task.is_deletable:
        buttons.append(
            ActionButton(
                "delete", "Delete", "trash", "danger",
                "Remove this waiting task from the job.",
                "Delete this task? It will not run.",
            )
        )  # fmt: skip
    return buttons


PAGE_SIZE = 50
# Few enough that what an app shows below the tasks (results, exports) stays in sight.
TASK_PAGE_SIZE = 20


def visible_tasks(task_model: type[DicomTask], user):
    tasks = task_model.objects.select_related("job", "job__owner", "source")
    return tasks if user.is_staff else tasks.filter(job__owner=user)


def _task_relations(task_model) -> list[str]:
    names = {f.name for f in task_model._meta.get_fields()}
    return [name for name in ("source", "destination") if name in names]


def _query_without_page(request: HttpRequest) -> str:
    """The request's query string without `page` (for the pagination links)."""
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def _url_name(model, suffix: str) -> str:
    return f"{model._meta.app_label}:{suffix}"


def job_urlpatterns(job_model: type[DicomJob], task_model: type[DicomTask]) -> list:
    """URL patterns of the shared job pages for one app (include them in the app's namespace)."""

    @login_required
    def job_list(request: HttpRequest) -> HttpResponse:
        form = JobFilterForm(request.GET or None, user=request.user, models=[job_model])
        form.is_valid()
        jobs = form.filter(visible_jobs(job_model, request.user)).order_by("-created", "-pk")
        page = Paginator(jobs, PAGE_SIZE).get_page(request.GET.get("page"))
        rows = [JobRow(job, "", job_detail_url(job), summarize(job)) for job in page.object_list]
        return render(
            request,
            "core/job_list.html",
            {
                "page": page,
                "form": form,
                "query": _query_without_page(request),
                "job_model_name": job_model._meta.verbose_name,
                "app_label": job_model._meta.app_label,
                "rows": rows,
            },
        )

    def _job(request, pk):
        return get_object_or_404(visible_jobs(job_model, request.user), pk=pk)

    def _job_context(request, job) -> dict:
        counts = job.task_counts()
        total = sum(counts.values())
        finished = sum(counts[status] for status in DicomTask.FINAL_STATUSES)
        status, status_label = job.status, job.get_status_display()
        if status == DicomJob.Status.PENDING and counts[DicomTask.Status.IN_PROGRESS]:
            # A worker took a task before the job's row was updated: say what happens.
            status, status_label = DicomJob.Status.IN_PROGRESS, DicomJob.Status.IN_PROGRESS.label
        return {
            "job": job,
            "counts": counts,
            "total": total,
            "finished": finished,
            # A job without tasks has nothing finished: no full bar.
            "percent": round(100 * finished / total) if total else 0,
            "status": status,
            "status_label": status_label,
            "running": job.status not in DicomJob.FINAL_STATUSES,
            "app_label": job_model._meta.app_label,
            "is_staff": request.user.is_staff,
            "actions": offered_job_actions(job, request.user, counts),
        }

    @login_required
    def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
        job = _job(request, pk)
        context = _job_context(request, job)
        tasks = job.tasks.select_related(*_task_relations(task_model)).order_by("id")
        context["task_page"] = Paginator(tasks, TASK_PAGE_SIZE).get_page(request.GET.get("page"))
        context["summary"] = summarize(job)
        # An app may extend the page with "<app_label>/job_detail.html" (block.super).
        templates = [f"{job_model._meta.app_label}/job_detail.html", "core/job_detail.html"]
        return render(request, templates, context)

    @login_required
    def job_progress(request: HttpRequest, pk: int) -> HttpResponse:
        """The progress fragment the job page polls while the job runs."""
        job = _job(request, pk)
        response = render(request, "core/_job_progress.html", _job_context(request, job))
        if job.status in DicomJob.FINAL_STATUSES or request.GET.get("shown", job.status) != (
            job.status
        ):
            # The page shows other buttons now (e.g. no Delete once a worker took a task; new
            # ones once the job ended) and other task states: reload it.
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
                "actions": offered_task_actions(task, request.user),
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


@login_required
def all_jobs(request: HttpRequest) -> HttpResponse:
    """The Jobs page: the jobs of every app in one list, with the same filters."""
    models = job_models()
    form = JobFilterForm(request.GET or None, user=request.user, models=models)
    form.is_valid()
    page = Paginator(all_jobs_page(form, models), PAGE_SIZE).get_page(request.GET.get("page"))
    rows = rows_of(page.object_list, models)
    return render(
        request,
        "core/all_jobs.html",
        {
            "page": page,
            "rows": rows,
            "form": form,
            "query": _query_without_page(request),
        },
    )
